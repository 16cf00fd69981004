-- Titan stand-in seed: run once, on an empty database, after schema.sql.
-- The filled orders below produce exactly the seeded positions (the exchange account is seeded
-- with the same): exec-1 BTCUSDT 0.5 @ 64000, exec-1 ETHUSDT -2.0 @ 3100, exec-2 SOLUSDT 40 @ 150.

-- No BEGIN/COMMIT here: `sandbox.up` runs schema and seed in one transaction.

INSERT INTO orders (client_order_id, exchange_order_id, host, strategy, symbol, side, type, qty,
                    price, status, created_at, updated_at) VALUES
    ('exec-1-5f0c2a9e71b4', '900001', 'exec-1', 'hunter',    'BTCUSDT', 'BUY',  'LIMIT', 0.3, 63500,
     'FILLED', now() - interval '3 days',           now() - interval '3 days'),
    ('exec-1-a81d6e02c3f9', '900002', 'exec-1', 'scavenger', 'BTCUSDT', 'BUY',  'LIMIT', 0.2, 64750,
     'FILLED', now() - interval '2 days 5 hours',   now() - interval '2 days 5 hours'),
    ('exec-1-3c9b7d41e6a0', '900003', 'exec-1', 'sentinel',  'ETHUSDT', 'SELL', 'LIMIT', 1.5, 3080,
     'FILLED', now() - interval '2 days',           now() - interval '2 days'),
    ('exec-1-e4f2085bd917', '900004', 'exec-1', 'hunter',    'ETHUSDT', 'SELL', 'LIMIT', 0.5, 3160,
     'FILLED', now() - interval '1 day 7 hours',    now() - interval '1 day 7 hours'),
    ('exec-2-7b16c3a9f05d', '900005', 'exec-2', 'scavenger', 'SOLUSDT', 'BUY',  'LIMIT', 30,  149,
     'FILLED', now() - interval '1 day 3 hours',    now() - interval '1 day 3 hours'),
    ('exec-2-0d95e8f4a2c6', '900006', 'exec-2', 'sentinel',  'SOLUSDT', 'BUY',  'LIMIT', 10,  153,
     'FILLED', now() - interval '20 hours',         now() - interval '20 hours'),
    ('exec-2-c4a07b1e9d38', '900007', 'exec-2', 'hunter',    'SOLUSDT', 'SELL', 'LIMIT', 5,   152,
     'CANCELED', now() - interval '18 hours',       now() - interval '18 hours');

INSERT INTO fills (order_id, host, symbol, side, qty, price, filled_at)
SELECT id, host, symbol, side, qty, price, created_at + interval '2 seconds'
FROM orders WHERE status = 'FILLED' ORDER BY id;

INSERT INTO positions (host, symbol, qty, avg_price, updated_at) VALUES
    ('exec-1', 'BTCUSDT',  0.5, 64000, now() - interval '2 days 5 hours'),
    ('exec-1', 'ETHUSDT', -2.0, 3100,  now() - interval '1 day 7 hours'),
    ('exec-2', 'SOLUSDT', 40,   150,   now() - interval '20 hours');

INSERT INTO audit_log (ts, host, actor, action, detail) VALUES
    (now() - interval '3 days 1 hour', 'exec-1', 'deploy-bot', 'deploy',
     '{"service": "titan-execution", "version": "1.4.1"}'),
    (now() - interval '2 days 2 hours', 'core', 'ops:mhernandez', 'breaker_reset',
     '{"reason": "volatility spike cleared"}'),
    (now() - interval '1 day 6 hours', 'exec-1', 'ops:akowalski', 'halt',
     '{"source": "nats", "reason": "exchange maintenance window"}'),
    (now() - interval '1 day 5 hours', 'exec-1', 'ops:akowalski', 'resume',
     '{"reason": "maintenance over"}'),
    (now() - interval '19 hours', 'core', 'ops:mhernandez', 'master_arm',
     '{"enabled": true}');

