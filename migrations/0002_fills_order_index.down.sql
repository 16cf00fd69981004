DROP INDEX IF EXISTS fills_order_id_idx;
