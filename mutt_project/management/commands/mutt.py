"""``python manage.py mutt up``: bring the whole system up on one machine and supervise it.

One ``mutt up`` runs per data folder (a second one refuses at once, naming the first). It keeps the
embedded PostgreSQL and Redis running (restarting them when they die) and on exit stops only the
ones it started. It never prints secrets unless asked to on a terminal.

``mutt services start|stop|status`` manages only the embedded PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mutt_project import embedded, instance
from mutt_project.supervisor import ChildSpec, ServiceSpec, Supervisor, end_leftovers

logger = logging.getLogger("mutt.up")

BASE_DIR = Path(settings.BASE_DIR)
# The longest an embedded start can take: waiting for the folder lock, then PostgreSQL's own timeouts.
SERVICE_START_TIMEOUT = embedded.LOCK_TIMEOUT + 150


def credentials_path() -> Path:
    return Path(settings.MUTT_DATA_DIR) / "credentials.json"


def child_specs(http_host: str, http_port: int, workers: int) -> list[ChildSpec]:
    """The processes `mutt up` runs, decided once the services are up and migrated (some read settings)."""
    python = sys.executable
    gunicorn = [
        python,
        "-m",
        "gunicorn",
        "-c",
        str(BASE_DIR / "mutt_project" / "gunicorn.conf.py"),
        "--bind",
        f"{http_host}:{http_port}",
        "--workers",
        str(workers),
        "--chdir",
        str(BASE_DIR),
    ]
    # Children find the same embedded services through the data folder.
    env = {"MUTT_DATA_DIR": str(settings.MUTT_DATA_DIR), "DJANGO_SETTINGS_MODULE": "mutt_project.settings"}
    web_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir())}
    alerter = [python, str(BASE_DIR / "manage.py"), "run_alerter"]
    if settings.MUTT_ALERTER_METRICS_PORT:
        alerter += ["--metrics-port", str(settings.MUTT_ALERTER_METRICS_PORT)]
    forwarder = [python, str(BASE_DIR / "manage.py"), "run_forwarder"]
    if settings.MUTT_FORWARDER_METRICS_PORT:
        forwarder += ["--metrics-port", str(settings.MUTT_FORWARDER_METRICS_PORT)]
    remediation = [python, str(BASE_DIR / "manage.py"), "run_remediation"]
    if settings.MUTT_REMEDIATION_METRICS_PORT:
        remediation += ["--metrics-port", str(settings.MUTT_REMEDIATION_METRICS_PORT)]
    # django-q2's cluster runs every periodic job (ADR-014); the schedules were made by `migrate` above.
    # Its job metrics are in Redis, exported by the web tier's /metrics: it needs no port of its own.
    qcluster = [python, str(BASE_DIR / "manage.py"), "qcluster"]
    specs = [
        ChildSpec(name="web", argv=gunicorn, env=web_env),
        ChildSpec(name="alerter", argv=alerter, env=env),
        ChildSpec(name="forwarder", argv=forwarder, env=env),
        ChildSpec(name="remediation", argv=remediation, env=env),
        ChildSpec(name="qcluster", argv=qcluster, env=env),
    ]
    mock_args = mock_moog_args()  # None when moog_url names a real Moogsoft: no local stand-in then
    if mock_args is not None:
        mock_moog = [python, str(BASE_DIR / "manage.py"), "mock_moog", "--host", "127.0.0.1"]
        mock_moog += ["--port", str(settings.MUTT_MOCK_MOOG_PORT), *mock_args]
        specs.append(ChildSpec(name="mock_moog", argv=mock_moog, env=env))
    return specs


# mock_moog's option for "serve only while no real Moogsoft is configured" (devtools/management/commands/mock_moog.py).
FOLLOW_FLAG = "--follow-moog-url"


def mock_moog_args() -> list[str] | None:
    """How ``mutt up`` runs mock_moog: ``[]`` serve, ``[FOLLOW_FLAG]`` decide later, None not at all.

    ``mutt up`` asks before it starts the embedded services; reading a setting then would only log a
    connection failure and return the default. So while they are down the mock is started in follow
    mode: it reads ``moog_url`` once the services are up and serves only while no real Moogsoft is
    configured. With the services reachable the answer is final: no mock for a real Moogsoft URL, and
    the mock when the URL is empty, local, or cannot be read. This lives in the wiring, not in delivery,
    because only the wiring knows about the embedded services (ADR-010).
    """
    from configcenter import runtime
    from delivery.destinations.moogsoft import configured_moog_url, is_local_mock

    data_dir = Path(settings.MUTT_DATA_DIR)
    if (settings.MUTT_EMBEDDED_REDIS and not embedded.redis_running(data_dir)) or (
        settings.MUTT_EMBEDDED_POSTGRES and not embedded.postgres_running(data_dir)
    ):
        return [FOLLOW_FLAG]
    try:
        moog_url = configured_moog_url()
    finally:
        # One read is all the supervisor needs: no settings subscriber kept running in it.
        runtime.reset(wait=False)
    return [] if moog_url is None or is_local_mock(moog_url) else None


def metrics_dir() -> Path:
    return Path(settings.MUTT_DATA_DIR) / "prometheus"


def reset_metrics_dir() -> None:
    """gunicorn workers write metrics to files here; files of a previous run would be counted again."""
    folder = metrics_dir()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port``.

    The probe sets SO_REUSEADDR as gunicorn does, so connections of a previous run still in
    TIME_WAIT do not count; only a listener does.
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


def port_refusal(http_url: str, http_port: int, previous: dict[str, Any]) -> str:
    """Why `mutt up` will not start on a port something listens on, with the likeliest cause."""
    if previous.get("pid"):
        # A record left behind means the last `mutt up` on this folder did not finish its shutdown.
        cause = (
            f"the last mutt up on this data folder (pid {previous['pid']}) did not stop cleanly, so processes "
            f"it started may still hold the port (see `ss -ltnp 'sport = :{http_port}'`) and should be stopped"
        )
    else:
        cause = "a MUTT on another data folder?"
    return (
        f"{http_url} is already in use by another program ({cause}); choose another port with --port or MUTT_HTTP_PORT"
    )


def wait_for_http(url: str, timeout: float, stopping: Callable[[], bool] = lambda: False) -> bool:
    """True once ``url`` answers 200; False after ``timeout``, or at once when ``stopping()`` says so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  (our own loopback URL)
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


class Command(BaseCommand):
    help = "Run MUTT on this machine (`up`), or manage its embedded services (`services`)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        up = sub.add_parser("up", help="Start services, migrate, bootstrap, and supervise every process.")
        up.add_argument("--no-sample-data", action="store_true", help="Do not load the sample rules.")
        up.add_argument("--port", type=int, default=None, help="HTTP port (default MUTT_HTTP_PORT or 8000).")
        up.add_argument(
            "--show-credentials",
            action="store_true",
            help="Also print the admin password and API keys (only when the output is a terminal).",
        )
        services = sub.add_parser("services", help="Start, stop or show the embedded PostgreSQL and Redis.")
        services.add_argument("operation", choices=["start", "stop", "status"])

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "services":
            self.handle_services(options["operation"])
        else:
            self.handle_up(
                sample_data=not options["no_sample_data"],
                port=options["port"],
                show_credentials=options["show_credentials"],
            )

    # --- services -----------------------------------------------------------------------------

    def _embedded_selection(self) -> dict[str, bool]:
        return {"postgres": settings.MUTT_EMBEDDED_POSTGRES, "redis": settings.MUTT_EMBEDDED_REDIS}

    def handle_services(self, operation: str) -> None:
        data_dir = Path(settings.MUTT_DATA_DIR)
        selection = self._embedded_selection()
        if operation == "start":
            started = embedded.start(data_dir, **selection)
            self.stdout.write(f"postgres started={started.postgres} redis started={started.redis}")
        elif operation == "stop":
            try:
                holder = instance.holder(data_dir)
            except instance.LockError as exc:
                raise CommandError(str(exc)) from None
            if holder is not None:
                # Those services belong to (or are used by) the running `mutt up`; it stops what it owns.
                raise CommandError(
                    f"mutt up (pid {holder.get('pid', 'unknown')}, {holder.get('http_url', 'unknown URL')}) "
                    f"is running on {data_dir}; stop it instead"
                )
            embedded.stop(data_dir, **selection)
            self.stdout.write("embedded services stopped")
        else:
            self.stdout.write(json.dumps({**embedded.status(data_dir), "embedded": selection}, indent=2))

    # --- up -----------------------------------------------------------------------------------

    def handle_up(self, *, sample_data: bool, port: int | None, show_credentials: bool = False) -> None:
        from mutt_project.bootstrap import bootstrap

        data_dir = Path(settings.MUTT_DATA_DIR).resolve()
        selection = self._embedded_selection()
        http_port = port or settings.MUTT_HTTP_PORT
        http_url = f"http://{settings.MUTT_HTTP_HOST}:{http_port}"
        # First of all: a second `mutt up` on this folder must not touch the first one's services.
        try:
            lock = instance.acquire(data_dir, http_url=http_url)
        except instance.LockError as exc:  # another holder, or a lock file this user cannot use
            raise CommandError(str(exc)) from None
        self._end_leftovers(lock)
        if port_in_use(settings.MUTT_HTTP_HOST, http_port):
            lock.release()  # nothing decided: services a killed run left stay on its record
            # Otherwise gunicorn could not bind, and the readiness check would be answered by whatever listens.
            raise CommandError(port_refusal(http_url, http_port, lock.previous))
        owned = {"postgres": False, "redis": False}
        # Each spawn is recorded, so the next run can end children this one leaves behind if it is killed.
        supervisor = Supervisor([], on_spawn=lambda running: lock.record(children=running))
        # Signals first: a Ctrl-C during start-up must still stop whatever was started.
        supervisor.install_signal_handlers()
        try:
            self._start_embedded(data_dir, selection, lock, owned, supervisor)
            if supervisor.stopping:
                return
            call_command("migrate", interactive=False, verbosity=0)
            credentials = bootstrap(
                credentials_path(),
                http_url=http_url,
                mock_moog_url=f"http://127.0.0.1:{settings.MUTT_MOCK_MOOG_PORT}",
                sample_data=sample_data,
            )
            if supervisor.stopping:
                return
            reset_metrics_dir()
            supervisor.add(child_specs(settings.MUTT_HTTP_HOST, http_port, settings.MUTT_HTTP_WORKERS))
            supervisor.start()
            if not wait_for_http(f"{http_url}/healthz", timeout=60, stopping=lambda: supervisor.stopping):
                if supervisor.stopping:
                    return
                raise CommandError(f"the web server did not answer on {http_url} within 60s; see the log above")
            self.stdout.write(banner(credentials, credentials_path(), show_credentials, self.stdout.isatty()))
            self.stdout.flush()
            while not supervisor.stopping:
                supervisor.step()
                time.sleep(0.5)
        finally:
            self._shut_down(supervisor, data_dir, selection, lock, owned)

    def _end_leftovers(self, lock: instance.InstanceLock) -> None:
        """End what a killed previous `mutt up` left running: its children get SIGTERM when it dies, but
        one may ignore it or still be draining, and would hold the port."""
        records = lock.previous.get("children")
        if not isinstance(records, list) or not records:
            return
        ended = end_leftovers(records)
        if ended:
            previous = lock.previous.get("pid", "unknown")
            self.stdout.write(f"Ended {len(ended)} process(es) left running by mutt up pid {previous} (it was killed).")

    def _start_embedded(
        self,
        data_dir: Path,
        selection: dict[str, bool],
        lock: instance.InstanceLock,
        owned: dict[str, bool],
        supervisor: Supervisor,
    ) -> None:
        """Start (or reuse, or adopt) the embedded services, record which are ours, and watch them."""
        if any(selection.values()):
            self.stdout.write(f"Starting embedded services in {data_dir} ...")
            started = embedded.start(data_dir, **selection)
            owned.update(postgres=started.postgres, redis=started.redis)
            self._adopt_orphans(lock, owned, selection)
        # Recorded even when nothing embedded is used: this run has decided, so a clean exit clears the record.
        self._record_owned(lock, owned)
        supervisor.watch(self._service_specs(data_dir, selection, lock, owned))

    def _shut_down(
        self,
        supervisor: Supervisor,
        data_dir: Path,
        selection: dict[str, bool],
        lock: instance.InstanceLock,
        owned: dict[str, bool],
    ) -> None:
        """Stop the children, then the embedded services this run owns; release the data folder."""
        supervisor.stop_all()
        # A restart of an embedded service may still be in progress (its thread records what it owns).
        if not supervisor.wait_for_services(timeout=SERVICE_START_TIMEOUT):
            logger.warning("an embedded service was still starting after %ss; stopping anyway", SERVICE_START_TIMEOUT)
        if any(owned.values()):
            embedded.stop(data_dir, **owned)
        kept = [name for name, on in selection.items() if on and not owned[name]]
        if kept:
            self.stdout.write(f"Left running (not started by this mutt up): embedded {', '.join(kept)}.")
        lock.release()
        self.stdout.write("MUTT stopped.")

    def _adopt_orphans(self, lock: instance.InstanceLock, owned: dict[str, bool], selection: dict[str, bool]) -> None:
        """Services a previous `mutt up` started and could not stop (it was killed) are ours to stop."""
        pids = {"postgres": embedded.postgres_pid, "redis": embedded.redis_pid}
        for name, pid_of in pids.items():
            recorded = lock.previous.get(f"{name}_pid")
            if selection[name] and not owned[name] and recorded is not None and recorded == pid_of(lock.data_dir):
                previous = lock.previous.get("pid")
                logger.info("adopting embedded %s (pid %s) left running by mutt up pid %s", name, recorded, previous)
                owned[name] = True

    @staticmethod
    def _record_owned(lock: instance.InstanceLock, owned: dict[str, bool]) -> None:
        lock.record_owned(
            postgres_pid=embedded.postgres_pid(lock.data_dir) if owned["postgres"] else None,
            redis_pid=embedded.redis_pid(lock.data_dir) if owned["redis"] else None,
        )

    def _service_specs(
        self, data_dir: Path, selection: dict[str, bool], lock: instance.InstanceLock, owned: dict[str, bool]
    ) -> list[ServiceSpec]:
        """Watch every embedded service this run uses; one it restarts is one it started, so it owns it."""

        def restarter(name: str) -> Any:
            def restart() -> None:
                started = embedded.start(data_dir, postgres=name == "postgres", redis=name == "redis")
                owned[name] = owned[name] or getattr(started, name)
                self._record_owned(lock, owned)

            return restart

        probes = {"postgres": embedded.postgres_running, "redis": embedded.redis_running}
        return [
            ServiceSpec(f"embedded {name}", running=lambda probe=probe: probe(data_dir), start=restarter(name))
            for name, probe in probes.items()
            if selection[name]
        ]


def banner(credentials: dict[str, str], path: Path, show_credentials: bool, on_terminal: bool) -> str:
    """What `mutt up` prints once it is up: the URLs and where the secrets are.

    The secrets themselves only with ``--show-credentials`` and only on a terminal: anything else
    (a pipe, a file, journald, a log shipper) would keep them in a log.
    """
    url = credentials["http_url"]
    lines = [
        "",
        "MUTT is up.",
        f"  Admin:        {url}/admin/   (user {credentials['admin_username']})",
        f"  API:          {url}/api/v2/   (schema {url}/api/v2/schema/)",
        f"  Health:       {url}/healthz   {url}/readyz",
        f"  Credentials:  {path} (mode 0600: admin password, admin and ingest API keys)",
    ]
    if show_credentials and on_terminal:
        lines += [
            f"  Password:     {credentials['admin_password']}",
            f"  Admin key:    {credentials['api_key']}",
            f"  Ingest key:   {credentials['ingest_api_key']}",
        ]
    elif show_credentials:
        lines.append("  Not shown with --show-credentials: the output is not a terminal and could be kept in a log.")
    lines += ["Press Ctrl-C to stop.", ""]
    return "\n".join(lines)
