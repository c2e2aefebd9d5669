import ArgumentParser
import Foundation
import MeterCore

struct Customers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage customers (who is billed).",
                                                    subcommands: [Add.self, List.self, Subscribe.self])
    struct Subscribe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put a customer on a plan from a billing period on (meter.customer_subscribe).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The customer's external id.") var externalID: String
        @Option(help: "Plan code.") var plan: String
        @Option(help: "First billing period on the plan, YYYY-MM.") var from: String
        func run() async throws {
            try global.withConnection { c in
                _ = try c.execute("select meter.customer_subscribe($1, $2, $3)", [externalID, plan, from])
            }
            print("customer \(externalID) on plan \(plan) from \(from)")
        }
    }
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or update a customer (idempotent).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The customer's external id (what events send as `customer`).") var externalID: String
        @Option(help: "Display name.") var name: String?
        @Option(help: "Billing timezone (IANA name). Default: UTC") var timezone: String = "UTC"
        func run() async throws {
            let id = try global.withConnection { c in
                try c.execute("select meter.customer_upsert($1, $2, $3) as id", [externalID, name, timezone]).single().int("id")
            }
            print("customer \(externalID) (id \(id))")
        }
    }
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List customers.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let rows = try global.withConnection { c in
                try c.execute("select id, external_id, coalesce(name, '') as name, billing_timezone from meter.customers order by id").rows
            }
            printTable(["id", "external_id", "name", "timezone"],
                       try rows.map { [String(try $0.int("id")), try $0.string("external_id"), try $0.string("name"),
                                       try $0.string("billing_timezone")] })
        }
    }
}

struct Meters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage meters (what is measured).",
                                                    subcommands: [Add.self, List.self])
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a meter, or add a version of its definition.",
            discussion: """
                Idempotent for an identical definition. A different aggregation, unique property or \
                set of dimensions becomes a new version, in force from --effective-from (a future UTC \
                hour; default the next one): hours before it keep the old definition. --dimension \
                (up to 3, repeated) names properties usage is grouped by (meter.rollup_hourly_dims, \
                GET /v1/usage?group_by=...); without it a new version keeps the latest version's.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The meter code (what events send as `meter`, the event type).") var code: String
        @Option(help: "count|sum|max|unique_count|latest|time_weighted_sum (gauges: the period's last value; the value held over time, in value x hours). Default: count") var aggregation: String = "count"
        @Option(name: .customLong("unique-property"), help: "Property counted by unique_count.") var uniqueProperty: String?
        @Option(help: "Display name.") var name: String?
        @Option(help: "Unit, e.g. requests, GB.") var unit: String?
        @Option(name: .customLong("effective-from"), help: "For a changed definition: the UTC hour it starts (RFC 3339).")
        var effectiveFrom: String?
        @Option(name: .customLong("dimension"), help: "A property usage is grouped by, e.g. model (repeat for up to 3).")
        var dimensions: [String] = []
        @Flag(name: .customLong("no-dimensions"), help: "A new version without dimensions.") var noDimensions = false
        func validate() throws {
            if noDimensions && !dimensions.isEmpty { throw ValidationError("--no-dimensions and --dimension exclude each other") }
        }
        func run() async throws {
            // Names are checked by meter_upsert (22023); none given keeps the latest version's.
            let dims: String? = noDimensions ? "{}" : dimensions.isEmpty ? nil
                : "{" + dimensions.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
                    .joined(separator: ",") + "}"
            let (id, latest) = try global.withConnection { c in
                let id = try c.execute("select meter.meter_upsert($1, $2, $3, $4, $5, $6::timestamptz, $7::text[]) as id",
                                       [code, aggregation, uniqueProperty, name, unit, effectiveFrom, dims]).single().int("id")
                let latest = try c.execute("""
                    select 'version ' || version || ', ' || aggregation || coalesce(' of ' || unique_property, '')
                           || case when cardinality(dimensions) > 0 then ' by ' || array_to_string(dimensions, ', ') else '' end
                           || case when effective_from = '-infinity' then ''
                                   else ', from ' || to_char(effective_from at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                              end as d
                    from meter.meter_versions where meter_id = $1 order by version desc limit 1
                    """, [id]).single().string("d")
                return (id, latest)
            }
            print("meter \(code) (id \(id), \(latest))")
        }
    }
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List meters.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let rows = try global.withConnection { c in
                try c.execute("""
                    select m.id, m.code, v.version, v.aggregation, coalesce(v.unique_property, '') as up,
                           array_to_string(v.dimensions, ', ') as dims,
                           case when v.effective_from = '-infinity' then 'always'
                                else to_char(v.effective_from at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') end as since,
                           coalesce(m.unit, '') as unit
                    from meter.meters m join meter.meter_versions v on v.meter_id = m.id
                    order by m.id, v.version
                    """).rows
            }
            printTable(["id", "code", "version", "aggregation", "unique_property", "dimensions", "in force from", "unit"],
                       try rows.map { [String(try $0.int("id")), try $0.string("code"), String(try $0.int("version")),
                                       try $0.string("aggregation"), try $0.string("up"), try $0.string("dims"), try $0.string("since"),
                                       try $0.string("unit")] })
        }
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage ingest API keys (stored as SHA-256 only).",
                                                    subcommands: [Create.self, List.self, Revoke.self])
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a key; the token is printed once.",
            discussion: """
                --scope (repeatable): ingest (POST /v1/events), cancel (POST /v1/events/cancel), read \
                (GET /v1/usage); default all three. --customer (repeatable, external ids): the key acts \
                for those customers only; default every customer. Outside its scopes a request gets 403 \
                insufficient_scope; an event or cancellation for another customer is rejected \
                customer_not_allowed.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "What the key is for.") var name: String
        @Option(help: "ingest | cancel | read; repeat for several. Default: all three.") var scope: [String] = []
        @Option(help: "A customer (external id) the key may act for; repeat for several. Default: every customer.")
        var customer: [String] = []
        @Flag(help: "Print only the token (for scripts).") var quiet = false
        func validate() throws {
            for s in scope where !["ingest", "cancel", "read"].contains(s) {
                throw ValidationError("--scope must be ingest, cancel or read; got \(s)")
            }
        }
        func run() async throws {
            let token = APIKeys.generate()
            let scopes = scope.isEmpty ? APIKeys.allScopes : scope
            let id = try global.withConnection { c in
                try APIKeys.register(c, name: name, token: token, scopes: scopes, customers: customer.isEmpty ? nil : customer)
            }
            if quiet { print(token); return }
            print("API key \(id) (\(name)) created, scopes \(Set(scopes).sorted().joined(separator: ", ")), "
                  + (customer.isEmpty ? "every customer" : "customers \(customer.joined(separator: ", "))")
                  + ". Token, shown only now:")
            print(token)
        }
    }
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (never their tokens).")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let rows = try global.withConnection { c in
                try c.execute("""
                    select id, name, prefix, to_char(created_at, 'YYYY-MM-DD HH24:MI:SS') as created,
                           coalesce(to_char(revoked_at, 'YYYY-MM-DD HH24:MI:SS'), '') as revoked,
                           array_to_string(scopes, ',') as scopes, coalesce(array_to_string(customers, ','), '*') as customers
                    from meter.api_keys_public order by id
                    """).rows
            }
            printTable(["id", "name", "prefix", "created", "revoked", "scopes", "customers"],
                       try rows.map { [String(try $0.int("id")), try $0.string("name"), try $0.string("prefix"),
                                       try $0.string("created"), try $0.string("revoked"), try $0.string("scopes"),
                                       try $0.string("customers")] })
        }
    }
    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by id or prefix; effective at once.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Key id or prefix.") var key: String
        func run() async throws {
            let n = try global.withConnection { c in
                try c.execute("select meter.api_key_revoke($1) as n", [key]).single().int("n")
            }
            if n == 0 { throw ValidationFailure(description: "no active key matches \(key)") }
            print("revoked \(n) key(s)")
        }
    }
}

struct Seed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create customers and meters from a JSON seed file (idempotent).",
        discussion: #"Format: {"customers":[{"external_id","name","billing_timezone"}], "meters":[{"code","aggregation","unique_property","name","unit"}]}"#)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Seed file. Default: examples/seed.json") var file: String = "examples/seed.json"
    func run() async throws {
        let seed = try SeedFile.load(path: file)
        let counts = try global.withConnection(migrate: false) { c in try seed.apply(c) }
        print("seeded \(counts.customers) customers and \(counts.meters) meters from \(file)")
    }
}
