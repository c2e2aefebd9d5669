// EngineAlignment.swift: the billing engine brought to a period's end before our close, the same
// way for `meterctl close --billing-api-base ...` and the replay (and so the chaos scenarios, which
// run meterctl close): every hour of the period synced (or the unsynced ones named and the close
// refused), the engine's period-end invoicing triggered on its test clock, its invoices awaited
// (stored by the webhook processor of a running service), then its usage summaries of the period
// fetched (EngineUsage: meter.billing_usage, the reconciliation's "synced to engine").

import Foundation
import PGClient

public enum EngineAlignment {
    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    /// Returns the number of the engine's invoices received for the period (0 when no customer is
    /// linked, or the period has not ended: the close itself then refuses with the date).
    @discardableResult
    public static func align(_ c: PGConnection, client: BillingClient, testClock: String?, period: String,
                             timeout: Double, say: (String) -> Void) async throws -> Int64 {
        let end = try c.execute("""
            select coalesce(max(extract(epoch from b.period_end))::bigint, 0) as e
            from meter.customers x cross join lateral meter.billing_period(x.id, $1) b
            where exists (select 1 from meter.billing_customers bc where bc.customer_id = x.id)
            """, [period]).single().int("e")
        guard end > 0 else { say("engine: no customer is linked to the engine; nothing to align"); return 0 }
        if try c.execute("select now() < to_timestamp($1::bigint) as early", [end]).single().bool("early") { return 0 }
        let unsynced = try c.execute("""
            select x.external_id as customer, m.code as meter, o.hour::text as hour, o.state
            from meter.sync_outbox o join meter.customers x on x.id = o.customer_id join meter.meters m on m.id = o.meter_id
            where o.state in ('pending', 'in_flight', 'dead') and o.hour < to_timestamp($1::bigint)
            order by 1, 2, 3 limit 20
            """, [end]).rows
        if !unsynced.isEmpty {
            for r in unsynced { say("unsynced: \(try r.string("customer")) \(try r.string("meter")) \(try r.string("hour")) (\(try r.string("state")))") }
            throw Failure(description: "hours of \(period) are not synced to the engine yet (first 20 above): run meterctl sync run, or meterctl sync status")
        }
        if let clock = testClock {
            let now = try await client.get("/v1/test_helpers/test_clocks/\(clock)")["frozen_time"]?.numberLexeme.flatMap { Int64($0) } ?? 0
            if now < end + 60 {
                _ = try await client.post("/v1/test_helpers/test_clocks/\(clock)/advance", [("frozen_time", String(end + 60))],
                                          idempotencyKey: "meter-close-\(clock)-\(end)")
                say("engine: test clock \(clock) advanced past \(period)'s end")
            }
        }
        let expected = try c.execute("select count(*) as n from meter.billing_customers where subscription_id is not null").single().int("n")
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while true {
            let got = try c.execute("select count(*) as n from meter.billing_invoices where period_end >= to_timestamp($1::bigint) - interval '1 day' and period_end <= to_timestamp($1::bigint) + interval '1 day' and status_rank >= 2",
                                    [end]).single().int("n")
            if got >= expected {
                say("engine: \(got) finalized invoice(s) received for \(period)")
                // The engine's own usage figures, for the reconciliation's "synced to engine".
                try await EngineUsage.fetch(c, client: client, period: period, say: say)
                return got
            }
            if ContinuousClock.now > deadline {
                throw Failure(description: "the engine's invoices for \(period) did not all arrive in \(Int(timeout)) s (\(got) of \(expected)); is serve running with its webhook endpoint registered?")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}
