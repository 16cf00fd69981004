-- Orders by symbol and time: the reconciliation and the runbooks' "orders for SYMBOL" queries.
CREATE INDEX orders_symbol_created_idx ON orders (symbol, created_at);
