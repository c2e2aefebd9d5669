import Foundation
import PGClient

/// The month close: meter.period_close for every customer (or one), one transaction per batch of
/// customers rather than one for the whole period, so a close of 100,000 customers neither holds
/// its locks nor grows its transaction for minutes (docs/scaling.md 1b). Used by `meterctl close`,
/// the replay and the chaos scenarios alike.
///
/// Partial runs: a refusal (grace not over in a customer's timezone, rollups behind) stops the run
/// at its batch; the batches before it stay closed, and running the close again finishes it
/// (closed customers answer `already_closed`). Customers created while it runs are swept up at the
/// end, in further batches, until none is left.
package enum MonthClose {
    /// One customer's answer from meter.period_close.
    package struct Outcome: Sendable, Equatable {
        package let customer: String
        /// closed, already_closed or no_plan.
        package let outcome: String
        /// The invoice's id, or "-".
        package let invoice: String
        package let lines: Int64
        /// The total in minor units, or "-".
        package let total: String
        package let currency: String
    }

    /// The close stopped at a batch; the customers of the batches before it are closed (committed).
    package struct Stopped: Error, CustomStringConvertible {
        package let period: String
        package let closedBefore: Int
        package let cause: any Error
        package var description: String {
            closedBefore == 0 ? "\(cause)"
                : "close \(period): stopped after \(closedBefore) customer(s), whose invoices are committed; fix the cause below and run the close again\n\(cause)"
        }
    }

    /// Closes `period` (YYYY-MM) for `customer` or all customers, `customersPerTransaction` at a
    /// time, each only once its period ended `graceSeconds` ago in its billing timezone. `progress` hears
    /// "close P: n/N customers" after each batch when there is more than one.
    package static func run(_ c: PGConnection, period: String, customer: String? = nil, graceSeconds: Int = 3600,
                            customersPerTransaction batch: Int = 100, progress: (String) -> Void = { _ in }) throws -> [Outcome] {
        precondition(batch >= 1 && graceSeconds >= 0)
        func list() throws -> [String] {
            try customer.map { [$0] }
                ?? c.execute("select external_id from meter.customers order by external_id collate \"C\"").rows.map { try $0.string("external_id") }
        }
        var outcomes: [Outcome] = []
        var done = Set<String>()
        var customers = try list()
        while !customers.isEmpty {
            for start in stride(from: 0, to: customers.count, by: batch) {
                let part = customers[start..<min(start + batch, customers.count)]
                do {
                    outcomes += try c.execute("""
                        select r.customer, r.outcome, coalesce(r.invoice_id::text, '-') as invoice, r.lines,
                               coalesce(r.total::text, '-') as total, coalesce(r.currency, '') as currency
                        from meter.period_close($1, null, make_interval(secs => $3::int), $2::text[]) r
                        join pg_catalog.unnest($2::text[]) with ordinality as x(external_id, n) on x.external_id = r.customer
                        order by x.n
                        """, [period, Array(part), graceSeconds]).rows.map { r in
                        Outcome(customer: try r.string("customer"), outcome: try r.string("outcome"), invoice: try r.string("invoice"),
                                lines: try r.int("lines"), total: try r.string("total"), currency: try r.string("currency"))
                    }
                } catch {
                    throw Stopped(period: period, closedBefore: done.count, cause: error)
                }
                done.formUnion(part)
                if customers.count > batch { progress("close \(period): \(start + part.count)/\(customers.count) customers") }
            }
            customers = try list().filter { !done.contains($0) }
        }
        return outcomes
    }
}
