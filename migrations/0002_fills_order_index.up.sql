-- Fills by order: an order's fills without a scan of every fill.
CREATE INDEX fills_order_id_idx ON fills (order_id);
