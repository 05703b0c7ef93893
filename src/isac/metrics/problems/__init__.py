"""Evaluators, one module per problem family (registered in :mod:`isac.metrics.evaluate`)."""
