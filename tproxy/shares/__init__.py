"""Share log: the ShareRecord, the batcher, the disk spool and the ClickHouse schema."""
