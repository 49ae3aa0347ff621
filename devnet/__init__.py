"""Development oracles: dev pool, synthetic miner, demo, load generator; the product never imports this package."""
