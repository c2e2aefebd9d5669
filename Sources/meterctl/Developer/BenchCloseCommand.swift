import ArgumentParser
import Foundation
import Logging
import PGClient
import MeterCore

/// `meterctl bench close`: meter.period_close for many customers, beside a read-only baseline.
struct BenchClose: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "close",
        abstract: "Month close for --customers customers (goal: 10,000 in ≤ 10 s), beside a read-only baseline.",
        discussion: """
            Runs in a database of its own (meter_bench_close, dropped and recreated in the same cluster). \
            Setup (not timed): --customers customers on one plan (a graduated count meter and a per-unit sum \
            meter), --events-per-customer events per customer and meter in the month two months back, \
            rolled up with meter.rollup_run. Baseline: one read-only query computing what the close reads \
            (per customer and meter: the rollup figures and the SHA-256 over the sorted events). Then \
            meter.period_close for all customers, timed; then a second close (must create nothing) and the \
            reconciliation view (every row must MATCH).
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Customers. Default: 10000") var customers: Int = 10_000
    @Option(name: .customLong("events-per-customer"), help: "Events per customer and meter. Default: 20") var eventsPerCustomer: Int = 20

    func validate() throws {
        if customers < 1 || eventsPerCustomer < 1 { throw ValidationError("--customers and --events-per-customer must be positive") }
    }

    func run() async throws {
        let logger = global.bootstrapLogging(defaultLevel: .warning)
        let sqlDir = try global.target.locateSQL()
        let main = try global.conninfo(migrate: true)
        let admin = try PGConnection(conninfo: main)
        try admin.execute("drop database if exists meter_bench_close with (force)")
        try admin.execute("create database meter_bench_close")
        admin.close()
        let c = try PGConnection(conninfo: databaseConninfo(main, database: "meter_bench_close"), statementTimeout: nil)
        defer { c.close() }
        _ = try c.execute("set client_min_messages = warning")
        try Migrator(sqlDirectory: sqlDir, logger: logger).migrate(c)

        let period = try c.execute("select to_char(date_trunc('month', now(), 'UTC') - interval '2 months', 'YYYY-MM') as p").single().string("p")
        print("setup: \(customers) customers, \(eventsPerCustomer) events per customer and meter in \(period)")
        try c.execute("select meter.meter_upsert('bench.calls', 'count'), meter.meter_upsert('bench.gb', 'sum')")
        try c.execute("select meter.plan_upsert('bench', 'usd', 'Bench')")
        try c.execute("""
            select meter.plan_price_set('bench', 'bench.calls', 'graduated', null, null,
                   '[{"up_to": 10, "unit_amount": 5}, {"up_to": null, "unit_amount": 1.5, "flat_amount": 20}]')
            """)
        try c.execute("select meter.plan_price_set('bench', 'bench.gb', 'per_unit', 0.35)")
        try c.execute("insert into meter.customers (external_id) select 'bench-' || lpad(g::text, 6, '0') from generate_series(1, $1::int) g",
                      [customers])
        try c.execute("""
            insert into meter.customer_plans (customer_id, effective_from, plan_id)
            select c.id, $1, (select id from meter.plans where code = 'bench') from meter.customers c
            """, [period])
        // The period's monthly partitions (migrate makes 35 days back only). The events go in
        // directly, without their keys in meter.event_keys: nothing the close reads uses them.
        try c.execute("select count(*) from meter.events_partitions_ensure(to_timestamp($1 || '-01', 'YYYY-MM-DD') at time zone 'UTC', now())",
                      [period])
        let t0 = ContinuousClock.now
        try c.execute("""
            insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, value)
            select cu.id, m.id, m.code || '-' || g, to_timestamp($1 || '-01', 'YYYY-MM-DD') at time zone 'UTC'
                       + make_interval(secs => (g * 7919 + cu.id * 104729) % (28 * 86400)),
                   case when m.code = 'bench.gb' then round(((g * 13 + cu.id) % 400) / 4.0, 2) else 1 end
            from meter.customers cu cross join meter.meters m cross join generate_series(1, $2::int) g
            """, [period, eventsPerCustomer])
        _ = try Rollup.drain(c, maxEvents: 1_000_000)
        print(String(format: "setup: %d events written and rolled up in %.1f s", customers * eventsPerCustomer * 2,
                     (ContinuousClock.now - t0).seconds))

        // Baseline: what the close reads, as one read-only query.
        let t1 = ContinuousClock.now
        let baselineRows = try c.execute("""
            with b as (select * from meter.billing_period((select min(id) from meter.customers), $1))
            select count(*) as n from (
                select r.customer_id, r.meter_id, sum(r.event_count), sum(r.quantity),
                       (select encode(sha256(convert_to(string_agg(e.idempotency_key || E'\\t' || e.value::text, E'\\n'
                                order by e.idempotency_key collate "C"), 'UTF8')), 'hex')
                        from meter.events e where e.customer_id = r.customer_id and e.meter_id = r.meter_id
                          and e.occurred_at >= b.period_start and e.occurred_at < b.period_end)
                from meter.rollup_hourly r, b
                where r.hour >= b.period_start and r.hour < b.period_end
                group by r.customer_id, r.meter_id, b.period_start, b.period_end) x
            """, [period]).single().int("n")
        let baseline = (ContinuousClock.now - t1).seconds
        print(String(format: "baseline: %d customer/meter figures read in %.2f s", baselineRows, baseline))

        let t2 = ContinuousClock.now
        let closed = try c.execute("select count(*) filter (where outcome = 'closed') as n from meter.period_close($1)", [period])
            .single().int("n")
        let close = (ContinuousClock.now - t2).seconds
        print(String(format: "close: %d customers closed in %.2f s (%.0f customers/s); baseline %.2f s; ratio %.2f",
                     closed, close, Double(closed) / close, baseline, close / baseline))
        let again = try c.execute("select count(*) filter (where outcome = 'already_closed') as n from meter.period_close($1)", [period])
            .single().int("n")
        let lines = try c.execute("select count(*) as n from meter.invoice_lines").single().int("n")
        let t3 = ContinuousClock.now
        let statuses = try c.execute("select status, count(*) as n from meter.reconciliation where period = $1 group by 1 order by 1", [period])
            .rows.map { "\(try $0.string("status")): \(try $0.int("n"))" }
        print(String(format: "second close: %d already closed, %d invoice lines in all; reconciliation (%.2f s): %@", again, lines,
                     (ContinuousClock.now - t3).seconds, statuses.joined(separator: ", ")))
        if again != closed || statuses.count != 1 || !statuses[0].hasPrefix("MATCH") { throw ExitCode.failure }
    }
}
