"""Development oracles for the translator proxy: none of this ships as product.

Owns the dev SV2 pool (``devnet.pool``), the synthetic SV1 miner
(``devnet.miner``), the ``tproxy demo`` wiring (``devnet.demo``), the share-log
load generator (``devnet.loadgen``) and the ``tproxy pool | demo | miner``
commands (``devnet.cli``, registered through the ``tproxy.commands`` entry
point group). Tests, benches and the demo use these as independent
counterparts of the proxy; ``devnet`` imports the product packages, the
product (``sv2``, ``tproxy``, ``monitoring``) never imports ``devnet``.
"""
