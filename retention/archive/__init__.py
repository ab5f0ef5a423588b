"""Archival of the event audit log (ADR-016): expired partitions exported to Parquet, verified, then dropped.

- :mod:`.schema`   the archive's columns (schema version 1) and the content checksum, computed the same
                   way by PostgreSQL over a table and by Python over Parquet files;
- :mod:`.store`    where archives go: a folder under ``MUTT_DATA_DIR`` or an S3-compatible bucket;
- :mod:`.export`   one partition streamed (COPY) into zstd Parquet files and a manifest;
- :mod:`.verify`   the files read back from the store and compared with what PostgreSQL counted;
- :mod:`.lifecycle` the state machine of one archive: export, verify, detach, drop, resumed after a crash;
- :mod:`.policy`   the ``events`` and ``archives`` retention policies;
- :mod:`.restore`  archived months loaded back into a table that is not a live partition (:mod:`.cli`).
"""
