"""The plugin's Prometheus metrics as scraped during a run: summaries, charts, and OpenMetrics for
backfilling a Prometheus."""
