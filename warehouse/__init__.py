"""The DuckDB warehouse: schema, views and the single writer."""
