"""API keys (and, later, dynamic settings) of the configuration center."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from core.audit import Actor, AuditedHistory


class Scope(models.TextChoices):
    INGEST = "ingest", "Ingest events"
    READ = "read", "Read"
    WRITE = "write", "Read and write"
    ADMIN = "admin", "Administer (everything)"


# What each scope grants: admin covers everything, write covers read.
SCOPE_GRANTS: dict[str, frozenset[str]] = {
    Scope.INGEST: frozenset({Scope.INGEST}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.WRITE: frozenset({Scope.READ, Scope.WRITE}),
    Scope.ADMIN: frozenset({Scope.INGEST, Scope.READ, Scope.WRITE, Scope.ADMIN}),
}


class ApiKey(models.Model):
    """A credential for integrations. Only a SHA-256 of the key is stored; the key is shown once."""

    name = models.CharField(max_length=100, unique=True, help_text="What the key is for, e.g. 'rsyslog-dc1'.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="api_keys"
    )
    prefix = models.CharField(max_length=12, unique=True, editable=False, help_text="Public part of the key.")
    key_hash = models.CharField(max_length=64, editable=False)
    scopes = ArrayField(models.CharField(max_length=10, choices=Scope.choices), default=list)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    # The hash is not a secret, but keeping it out of history keeps audit rows free of key material;
    # last use is bookkeeping, not a change anyone made.
    history = HistoricalRecords(bases=[AuditedHistory], excluded_fields=["key_hash", "last_used_at"])

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def grants(self, scope: str) -> bool:
        return any(scope in SCOPE_GRANTS.get(held, frozenset()) for held in self.scopes)

    def as_actor(self) -> Actor:
        """Who history names for a change made with this key (core.audit.ActingCredential)."""
        return Actor.for_api_key(self)

    def clean(self) -> None:
        unknown = sorted(set(self.scopes) - set(Scope.values))
        if unknown:
            raise ValidationError({"scopes": f"Unknown scope(s) {', '.join(unknown)}; use {', '.join(Scope.values)}."})
        if not self.scopes:
            raise ValidationError({"scopes": "An API key needs at least one scope."})
        self.scopes = sorted(set(self.scopes))


class BootstrapStep(models.Model):
    """A one-time setup step that has run (admin user, first API keys, sample data), so it never reruns."""

    name = models.CharField(max_length=100, unique=True)
    completed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class DynamicSetting(models.Model):
    """A runtime setting's stored value; ``value`` is null while the registry default applies.

    Rows exist for every registered key (created after migrate), so the admin lists them all.
    PostgreSQL is the source of truth; Redis holds a copy every process reads.
    """

    key = models.CharField(max_length=100, unique=True)
    value = models.JSONField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(bases=[AuditedHistory])

    class Meta:
        ordering = ["key"]
        verbose_name = "runtime setting"

    def __str__(self) -> str:
        return self.key
