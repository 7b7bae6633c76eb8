"""Units of work as plain, typed functions; the flows wrap them as Prefect tasks."""
