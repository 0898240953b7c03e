"""What each page of the dashboard shows, read from the registry and the run folders into frozen
dataclasses that the templates render (one module per page)."""
