"""Django's PostgreSQL backend, with passwords from the rotating ``DATABASE_PASSWORD`` credential."""
