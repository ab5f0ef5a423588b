"""Database backends of MUTT."""
