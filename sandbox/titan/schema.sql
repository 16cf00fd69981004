-- Titan stand-in schema. Idempotent: applied by the database owner at sandbox creation and
-- safe to apply again. The services connect as role titan.

CREATE TABLE IF NOT EXISTS positions (
    host        text        NOT NULL,
    symbol      text        NOT NULL,
    qty         numeric     NOT NULL DEFAULT 0,
    avg_price   numeric     NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, symbol)
);

CREATE TABLE IF NOT EXISTS orders (
    id                 bigserial   PRIMARY KEY,
    client_order_id    text        UNIQUE NOT NULL,
    exchange_order_id  text,
    host               text        NOT NULL,
    strategy           text,
    symbol             text        NOT NULL,
    side               text        NOT NULL,
    type               text        NOT NULL,
    qty                numeric     NOT NULL,
    price              numeric,
    status             text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- The engines look up their own working orders at startup.
CREATE INDEX IF NOT EXISTS orders_host_status_idx ON orders (host, status);
-- The strategy signal an order traded (none for a flatten's): at most one order a signal.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS signal_id text;
CREATE INDEX IF NOT EXISTS orders_signal_idx ON orders (signal_id);

-- Signals an engine took on, so that none is traded twice when JetStream delivers it again (a
-- consumer reset replays the stream; a restart keeps this). The engines prune it after an hour.
CREATE TABLE IF NOT EXISTS signals (
    signal_id  text        PRIMARY KEY,
    host       text        NOT NULL,
    taken_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS fills (
    id         bigserial   PRIMARY KEY,
    order_id   bigint      REFERENCES orders (id),
    host       text,
    symbol     text,
    side       text,
    qty        numeric,
    price      numeric,
    filled_at  timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS audit_log (
    id      bigserial   PRIMARY KEY,
    ts      timestamptz NOT NULL DEFAULT now(),
    host    text,
    actor   text        NOT NULL,
    action  text        NOT NULL,
    detail  jsonb
);

-- When the owner is not titan itself, let the services read and write (not alter) the tables.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'titan') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON positions, orders, fills, audit_log, signals TO titan;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO titan;
    END IF;
END
$$;
