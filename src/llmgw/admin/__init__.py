"""The admin API, the store of managed keys, tenants and teams, and the CLI
commands that call the API."""
