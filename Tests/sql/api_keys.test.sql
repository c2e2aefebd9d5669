-- API keys: meter.api_key_create / meter.api_key_authenticate / meter.api_key_revoke.
-- Only SHA-256(token) and the 12-character prefix are stored; revocation is immediate.
-- Expected hashes are literals computed outside Postgres (printf %s TOKEN | sha256sum).
begin;
select plan(26);
\ir support/fixtures.sql

create temp table tok (name text primary key, token text not null);
insert into tok values
    ('alpha',   'mk_AlphaTapKey0123456789ABCDEFGHIJKLMNOPQRS'),
    ('bravo',   'mk_BravoTapKey0123456789ABCDEFGHIJKLMNOPQRS'),
    ('charlie', 'mk_CharlieTap0123456789ABCDEFGHIJKLMNOPQRST');

create temp table k as
select pg_temp.key_create('tap-keys-alpha',   (select token from tok where name = 'alpha'))   as alpha,
       pg_temp.key_create('tap-keys-bravo',   (select token from tok where name = 'bravo'))   as bravo,
       pg_temp.key_create('tap-keys-charlie', (select token from tok where name = 'charlie')) as charlie;

-- ---------------------------------------------------------------------------------------------
-- Creation and storage.
-- ---------------------------------------------------------------------------------------------
select is((select pg_catalog.count(distinct x) from k, pg_catalog.unnest(array[alpha, bravo, charlie]) x where x is not null),
          3::bigint, 'api_key_create returns a distinct id for each key');

select results_eq(
    $$select a.id, a.name, a.prefix, a.key_hash, a.revoked_at from meter.api_keys a
      where a.id in (select alpha from k union all select bravo from k union all select charlie from k)
      order by a.name$$,
    $$values ((select alpha from k),   'tap-keys-alpha'::text,   'mk_AlphaTapK'::text,
              '\xea6a097e7903188999f14a071f18b9fd232b73db247a2e1be9594dfb989ea9bb'::bytea, null::timestamptz),
             ((select bravo from k),   'tap-keys-bravo',   'mk_BravoTapK',
              '\x8cd285bd33fb4214ee626568cfaf86f8af1bd27181076ba0ad37ea53b06edcdb', null),
             ((select charlie from k), 'tap-keys-charlie', 'mk_CharlieTa',
              '\x331e8b862efdc1383c5ac3e66d8e6438b19a0e027a248d114beb9b4eab7884a3', null)$$,
    'stored: name, prefix = first 12 chars, key_hash = SHA-256 of the token, not revoked');

select is((select pg_catalog.count(*) from meter.api_keys a, tok t where pg_catalog.strpos(a::text, t.token) > 0),
          0::bigint, 'no token appears anywhere in any meter.api_keys row');

select is((select pg_catalog.count(*) from meter.api_keys a, tok t
           where a.key_hash = pg_catalog.convert_to(t.token, 'UTF8')
              or pg_catalog.encode(a.key_hash, 'escape') = t.token),
          0::bigint, 'key_hash is not the token''s bytes');

select throws_ok(
    $$select pg_temp.key_create('tap-keys-again', 'mk_AlphaTapKey0123456789ABCDEFGHIJKLMNOPQRS')$$,
    '23505', 'duplicate key value violates unique constraint "api_keys_key_hash_key"',
    'the same token cannot be registered twice (23505)');

select throws_ok(
    $$insert into meter.api_keys (name, prefix, key_hash) values ('tap-keys-short', 'x', '\x00112233'::bytea)$$,
    '23514', 'new row for relation "api_keys" violates check constraint "api_keys_hash_length"',
    'a key_hash that is not 32 bytes is refused (23514)');

-- ---------------------------------------------------------------------------------------------
-- Authentication.
-- ---------------------------------------------------------------------------------------------
select is(meter.api_key_authenticate(pg_temp.key_hash('mk_AlphaTapKey0123456789ABCDEFGHIJKLMNOPQRS')), (select alpha from k),
          'the right token authenticates to its key id');
select is(meter.api_key_authenticate(pg_temp.key_hash('mk_BravoTapKey0123456789ABCDEFGHIJKLMNOPQRS')), (select bravo from k),
          'each token authenticates to its own key');
select is(meter.api_key_authenticate(pg_temp.key_hash('mk_AlphaTapKey0123456789ABCDEFGHIJKLMNOPQRs')), null::bigint,
          'a token differing in one character is refused (NULL)');
select is(meter.api_key_authenticate(pg_temp.key_hash('mk_AlphaTapK')), null::bigint,
          'the prefix alone is not a token (NULL)');
select is(meter.api_key_authenticate(pg_temp.key_hash('')), null::bigint, 'the empty token is refused (NULL)');
select is(meter.api_key_authenticate(null), null::bigint, 'a NULL token is refused (NULL)');

-- ---------------------------------------------------------------------------------------------
-- Revocation by id: 1 then 0, effective immediately, other keys unaffected.
-- ---------------------------------------------------------------------------------------------
select is(meter.api_key_revoke((select alpha from k)::text), 1, 'revoke by id returns 1');
select is(meter.api_key_authenticate(pg_temp.key_hash('mk_AlphaTapKey0123456789ABCDEFGHIJKLMNOPQRS')), null::bigint,
          'a key revoked by id no longer authenticates');
select is(meter.api_key_revoke((select alpha from k)::text), 0, 'revoking it again returns 0');
select is((select revoked_at from meter.api_keys where id = (select alpha from k)), pg_catalog.now(),
          'revoked_at is the revoking transaction''s time');
select is(meter.api_key_authenticate(pg_temp.key_hash('mk_BravoTapKey0123456789ABCDEFGHIJKLMNOPQRS')), (select bravo from k),
          'revoking one key leaves the others live');

-- ---------------------------------------------------------------------------------------------
-- Revocation by prefix.
-- ---------------------------------------------------------------------------------------------
select is(meter.api_key_revoke('mk_BravoTap'), 0, 'a partial prefix revokes nothing');
select is(meter.api_key_revoke('mk_BravoTapK'), 1, 'revoke by the 12-character prefix returns 1');
select is(meter.api_key_authenticate(pg_temp.key_hash('mk_BravoTapKey0123456789ABCDEFGHIJKLMNOPQRS')), null::bigint,
          'a key revoked by prefix no longer authenticates');
select is(meter.api_key_revoke('mk_BravoTapK'), 0, 'revoking by prefix again returns 0');

-- ---------------------------------------------------------------------------------------------
-- Unknown keys.
-- ---------------------------------------------------------------------------------------------
select is(meter.api_key_revoke('mk_NoSuchKey'), 0, 'an unknown prefix revokes nothing');
select is(meter.api_key_revoke('99999999999999999999'), 0,
          'a 20-digit argument is not taken as an id (no bigint overflow) and revokes nothing');
select is(meter.api_key_authenticate(pg_temp.key_hash('mk_CharlieTap0123456789ABCDEFGHIJKLMNOPQRST')), (select charlie from k),
          'after all that, the untouched key still authenticates');

select is_definer('meter', 'api_key_authenticate', array['bytea']::name[],
                  'api_key_authenticate is SECURITY DEFINER (meter_ingest reads no table)');
select isnt_definer('meter', 'api_key_create', array['text', 'text', 'bytea', 'text[]', 'text[]']::name[],
                    'api_key_create runs with the caller''s rights (operators only)');

select * from finish();
rollback;
