"""Database layer: embedded cluster, bootstrap, migrations, pool and tenant transactions."""
