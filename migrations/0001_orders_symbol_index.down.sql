DROP INDEX IF EXISTS orders_symbol_created_idx;
