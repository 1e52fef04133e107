"""Cost reports: gate metering data with Great Expectations, cost it, write tables and charts."""
