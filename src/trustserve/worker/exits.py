"""How a worker tells its supervisor it gives up for good (kept apart from ``worker.main`` so
the supervisor starts workers without importing what a worker needs)."""

EXIT_UNSERVABLE = 3  # the supervisor does not restart a worker that exits with this
UNSERVABLE = "cannot serve this model: "  # the log line the supervisor passes on as the reason
