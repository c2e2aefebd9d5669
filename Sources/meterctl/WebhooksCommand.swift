import ArgumentParser
import Foundation
import Logging
import PGClient
import MeterWire
import MeterCore

/// `meterctl webhooks add|list|disable|enable|rotate|redrive|deliver`: meter's outgoing webhooks
/// (meter.webhook_endpoints; delivered by `meterctl serve`, signed per Standard Webhooks).
struct WebhooksCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhooks",
        abstract: "Outgoing webhooks: endpoints that hear of invoice.closed, sync.dead_letter, alert.triggered, limit.reached, usage.late_after_close.",
        discussion: """
            Each message is signed per the Standard Webhooks specification (webhook-id, webhook-timestamp, \
            webhook-signature: v1,<base64 HMAC-SHA256>) with the endpoint's secret, printed once by add and rotate \
            (the previous secret also signs until the next rotation). Delivered at least once by `meterctl serve` \
            (retries with backoff; dead after --webhook-give-up-seconds; `webhooks redrive` sends the dead again); \
            the receiver deduplicates by webhook-id.
            """,
        subcommands: [Add.self, List.self, Disable.self, Enable.self, Rotate.self, Redrive.self, Deliver.self])

    static let types = ["alert.triggered", "invoice.closed", "usage.late_after_close", "sync.dead_letter", "limit.reached"]

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register an endpoint; prints its id and signing secret (once).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The endpoint's URL (http or https).") var url: String
        @Option(name: .customLong("event-type"), help: "An event type it takes (repeatable). Default: all") var eventTypes: [String] = []
        func run() async throws {
            let secret = StandardWebhooks.generateSecret()
            let types = eventTypes.isEmpty ? WebhooksCommand.types : eventTypes
            let id = try global.withConnection { c in
                try c.execute("select meter.webhook_endpoint_set(null, $1, $2::text[], $3) as id",
                              [url, "{" + types.joined(separator: ",") + "}", secret]).single().int("id")
            }
            print("endpoint \(id): \(url) (\(types.joined(separator: ", ")))")
            print("signing secret (shown once): \(secret)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List endpoints with their deliveries (never the secrets).")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let rows = try global.withConnection { c in
                try c.execute("""
                    select e.id::text as id, e.url, array_to_string(e.event_types, ',') as types,
                           case when e.enabled then 'yes' else 'no' end as enabled,
                           count(*) filter (where d.state in ('pending', 'in_flight'))::text as pending,
                           count(*) filter (where d.state = 'delivered')::text as delivered,
                           count(*) filter (where d.state = 'dead')::text as dead
                    from meter.webhook_endpoints e left join meter.webhook_deliveries d on d.endpoint_id = e.id
                    group by e.id order by e.id
                    """).rows
            }
            printTable(["id", "url", "event types", "enabled", "pending", "delivered", "dead"],
                       try rows.map { r in try ["id", "url", "types", "enabled", "pending", "delivered", "dead"].map { try r.string($0) } })
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop delivering to an endpoint (its pending messages wait).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Endpoint id.") var id: Int64
        func run() async throws { try WebhooksCommand.setEnabled(global, id, false) }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deliver to an endpoint again.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Endpoint id.") var id: Int64
        func run() async throws { try WebhooksCommand.setEnabled(global, id, true) }
    }

    static func setEnabled(_ global: GlobalOptions, _ id: Int64, _ enabled: Bool) throws {
        _ = try global.withConnection { c in try c.execute("select meter.webhook_endpoint_set($1, p_enabled => $2)", [id, enabled]) }
        print("endpoint \(id) \(enabled ? "enabled" : "disabled")")
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give an endpoint a new signing secret (printed once); the old one also signs until the next rotation.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Endpoint id.") var id: Int64
        func run() async throws {
            let secret = StandardWebhooks.generateSecret()
            _ = try global.withConnection { c in try c.execute("select meter.webhook_endpoint_set($1, p_secret => $2)", [id, secret]) }
            print("endpoint \(id): new signing secret (shown once): \(secret)")
        }
    }

    struct Redrive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send the dead deliveries again (of one endpoint, or all).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Endpoint id. Default: every endpoint") var endpoint: Int64?
        func run() async throws {
            let n = try global.withConnection { c in
                try c.execute("select meter.webhook_redrive($1) as n", [endpoint]).single().int("n")
            }
            print("\(n) dead deliver\(n == 1 ? "y" : "ies") pending again")
        }
    }

    struct Deliver: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Deliver what is due now, once (what `meterctl serve` does continuously).")
        @OptionGroup var global: GlobalOptions
        @Option(name: .customLong("give-up-seconds"), help: "Dead after failing for this long. Default: 259200 (3 days), at least 60") var giveUp: Int = 259_200
        func validate() throws {
            guard giveUp >= 60 else { throw ValidationError("--give-up-seconds must be at least 60; got \(giveUp)") }
        }
        func run() async throws {
            let logger = global.bootstrapLogging(defaultLevel: .warning)
            let conninfo = try global.conninfo(migrate: global.target.isEmbedded)
            let pool = PGPool(conninfo: conninfo, maxConnections: 2, logger: logger)
            var config = WebhookDeliveryConfiguration()
            config.giveUpAfter = .seconds(giveUp)
            do {
                let r = try await WebhookDelivery.pass(pool: pool, config: config, logger: logger)
                print("\(r.claimed) due: \(r.delivered) delivered, \(r.failed) failed (\(r.dead) dead)")
            } catch {
                await pool.shutdown()
                throw error
            }
            await pool.shutdown()
        }
    }
}
