"""The scenarios of issue 6, one module each; :data:`bench.cli.SCENARIOS` lists them."""
