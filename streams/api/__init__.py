"""The worker's HTTP API and the desk console (pages in desk_assets/)."""
