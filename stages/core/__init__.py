"""Library code shared by every stage: config schemas, errors, the item store, metrics."""
