/// Turns request JSON into normalized events, one verdict per element, before anything touches
/// the database. What needs the database (does the customer exist? is the key new?) is decided
/// by `meter.event_ingest_arrays()`; everything else is decided here, with a stable code and the field.
import MeterWire
import PGClient



/// Limits on what one request may carry. All configurable (`meterctl serve --help`).
public struct IngestLimits: Sendable {
    public var maxBatchEvents = 1000
    public var maxBodyBytes = 1 << 20
    public var maxPropertiesBytes = 8192
    public var maxStringLength = 255
    /// occurred_at may be this far ahead of the database clock.
    public var maxFutureSeconds = 300
    /// occurred_at may be this far behind the database clock.
    public var maxPastSeconds = 35 * 86_400
    public init() {}
}

/// An event that passed every check that does not need the database.
public struct NormalizedEvent: Sendable, Equatable {
    public var customer: String
    public var meter: String
    public var idempotencyKey: String
    public var occurredAt: RFC3339Timestamp
    public var value: ExactDecimal
    /// Always a JSON object.
    public var properties: JSONValue

    package init(customer: String, meter: String, idempotencyKey: String, occurredAt: RFC3339Timestamp,
                 value: ExactDecimal, properties: JSONValue) {
        self.customer = customer
        self.meter = meter
        self.idempotencyKey = idempotencyKey
        self.occurredAt = occurredAt
        self.value = value
        self.properties = properties
    }

}

/// A batch of events as `meter.event_ingest_arrays()` takes it: one array literal per column,
/// built field by field from the checked events (no JSON document serialized, then parsed again
/// by Postgres; docs/decisions.md 119).
package struct IngestArrays {
    private var customers, meters, keys, occurredAt, values, properties: PGArrayLiteral

    package init(capacity: Int) {
        customers = PGArrayLiteral(capacity: capacity * 12)
        meters = PGArrayLiteral(capacity: capacity * 12)
        keys = PGArrayLiteral(capacity: capacity * 24)
        occurredAt = PGArrayLiteral(capacity: capacity * 32)
        values = PGArrayLiteral(capacity: capacity * 8)
        properties = PGArrayLiteral(capacity: capacity * 8)
    }

    package mutating func append(_ e: NormalizedEvent) {
        customers.append(e.customer)
        meters.append(e.meter)
        keys.append(e.idempotencyKey)
        occurredAt.append(e.occurredAt.utcString)
        values.append(e.value.description)
        properties.append(JSONWriter.serialize(e.properties))
    }

    /// $1-$6 of the ingest statement: customers, meters, keys, occurred_at, values, properties.
    package var parameters: [any PGParameter] {
        [customers.text, meters.text, keys.text, occurredAt.text, values.text, properties.text]
    }
}

/// Why one event (or a whole request) was refused: a stable code, the field to blame, a reason.
public struct FieldError: Error, Sendable, Equatable {
    public var code: String
    public var field: String?
    public var message: String
    public init(code: String, field: String?, message: String) {
        self.code = code
        self.field = field
        self.message = message
    }
}

public enum DecodedEvent: Sendable {
    case valid(NormalizedEvent)
    case invalid(FieldError)
}

public enum EventDecoder {
    package static let nativeFields: Set<String> = ["customer", "meter", "idempotency_key", "occurred_at", "value", "properties"]

    /// Our own format: {customer, meter, idempotency_key, occurred_at, value?, properties?}.
    public static func decodeNative(_ json: JSONValue, limits: IngestLimits) -> DecodedEvent {
        guard let members = json.objectValue else {
            return .invalid(FieldError(code: "invalid_type", field: nil, message: "an event must be a JSON object"))
        }
        do throws(FieldError) {
            try onlyKnownMembers(members, nativeFields)
            let customer = try requiredString(json, "customer", limits: limits)
            let meter = try requiredString(json, "meter", limits: limits)
            let key = try requiredString(json, "idempotency_key", limits: limits)
            let occurredAt = try timestamp(json, "occurred_at")
            let value = try decimal(json["value"], field: "value")
            let properties = try propertiesObject(json["properties"], field: "properties", limits: limits)
            return .valid(NormalizedEvent(customer: customer, meter: meter, idempotencyKey: key,
                                          occurredAt: occurredAt, value: value, properties: properties))
        } catch {
            return .invalid(error)
        }
    }

    /// CloudEvents 1.0 structured JSON, as OpenMeter clients send it:
    /// id → idempotency_key, subject → customer, type → meter, time → occurred_at,
    /// data.value → value (default 1), data (less `value`) → properties. `time` is required:
    /// defaulting it to the receipt time would make a retried event conflict with itself.
    public static func decodeCloudEvent(_ json: JSONValue, limits: IngestLimits) -> DecodedEvent {
        guard json.objectValue != nil else {
            return .invalid(FieldError(code: "invalid_type", field: nil, message: "a CloudEvent must be a JSON object"))
        }
        do throws(FieldError) {
            guard let spec = json["specversion"] else {
                throw FieldError(code: "missing_field", field: "specversion", message: "specversion is required")
            }
            guard let specText = spec.stringValue else {
                throw FieldError(code: "invalid_type", field: "specversion", message: "specversion must be the string \"1.0\"")
            }
            guard specText == "1.0" else {
                throw FieldError(code: "invalid_value", field: "specversion", message: "only CloudEvents specversion \"1.0\" is supported")
            }
            _ = try requiredString(json, "source", limits: limits, maxLength: 2048)
            if let dct = json["datacontenttype"], !dct.isNull {
                guard let s = dct.stringValue,
                      s.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased() == "application/json" else {
                    throw FieldError(code: "invalid_value", field: "datacontenttype",
                                     message: "data must be JSON (datacontenttype application/json)")
                }
            }
            if let b = json["data_base64"], !b.isNull {
                throw FieldError(code: "invalid_value", field: "data_base64",
                                 message: "binary data (data_base64) is not supported; send data as a JSON object")
            }
            let key = try requiredString(json, "id", limits: limits)
            let customer = try requiredString(json, "subject", limits: limits)
            let meter = try requiredString(json, "type", limits: limits)
            let occurredAt = try timestamp(json, "time")
            var value = try decimal(nil, field: "data.value")
            var properties = JSONValue.object([])
            if let data = json["data"], !data.isNull {
                guard let members = data.objectValue else {
                    throw FieldError(code: "invalid_type", field: "data", message: "data must be a JSON object")
                }
                value = try decimal(data["value"], field: "data.value")
                properties = try propertiesObject(.object(members.filter { $0.0 != "value" }), field: "data", limits: limits)
            }
            return .valid(NormalizedEvent(customer: customer, meter: meter, idempotencyKey: key,
                                          occurredAt: occurredAt, value: value, properties: properties))
        } catch {
            return .invalid(error)
        }
    }

    // MARK: field checks

    /// Refuses the first member whose name is not in `known` (a typo must not be dropped silently).
    package static func onlyKnownMembers(_ members: [(String, JSONValue)], _ known: Set<String>) throws(FieldError) {
        for (k, _) in members where !known.contains(k) {
            throw FieldError(code: "unknown_field", field: k,
                             message: "unknown member \"\(k)\"; expected \(known.sorted().joined(separator: ", "))")
        }
    }

    package static func requiredString(_ json: JSONValue, _ field: String, limits: IngestLimits,
                               maxLength: Int? = nil) throws(FieldError) -> String {
        guard let v = json[field], !v.isNull else {
            throw FieldError(code: "missing_field", field: field, message: "\(field) is required")
        }
        guard let s = v.stringValue else {
            throw FieldError(code: "invalid_type", field: field, message: "\(field) must be a string")
        }
        try checkText(s, field: field, max: maxLength ?? limits.maxStringLength)
        return s
    }

    package static func checkText(_ s: String, field: String, max: Int) throws(FieldError) {
        let n = s.unicodeScalars.count
        if n == 0 { throw FieldError(code: "invalid_value", field: field, message: "\(field) must not be empty") }
        if n > max {
            throw FieldError(code: "too_long", field: field, message: "\(field) is \(n) characters; at most \(max) allowed")
        }
        if s.unicodeScalars.contains(where: { $0.value == 0 }) {
            throw FieldError(code: "invalid_value", field: field, message: "\(field) must not contain NUL (\\u0000)")
        }
    }

    package static func timestamp(_ json: JSONValue, _ field: String) throws(FieldError) -> RFC3339Timestamp {
        guard let v = json[field], !v.isNull else {
            throw FieldError(code: "missing_field", field: field, message: "\(field) is required (RFC 3339, e.g. 2026-11-25T13:45:00Z)")
        }
        guard let s = v.stringValue else {
            throw FieldError(code: "invalid_type", field: field, message: "\(field) must be an RFC 3339 string")
        }
        do {
            return try RFC3339Timestamp(parsing: s)
        } catch {
            throw FieldError(code: "invalid_timestamp", field: field, message: "\(field): \(error.reason)")
        }
    }

    package static func decimal(_ v: JSONValue?, field: String) throws(FieldError) -> ExactDecimal {
        let text: String
        switch v {
        case nil, .null?: return try! ExactDecimal(parsing: "1")
        case .number(let lexeme)?: text = lexeme
        case .string(let s)?: text = s
        default:
            throw FieldError(code: "invalid_type", field: field, message: "\(field) must be a number or a decimal string")
        }
        let d: ExactDecimal
        do {
            d = try ExactDecimal(parsing: text)
        } catch {
            throw FieldError(code: "invalid_decimal", field: field, message: "\(field): \(error.reason)")
        }
        if d.isNegative {
            throw FieldError(code: "negative_value", field: field,
                             message: "\(field) must not be negative; retract an event by cancelling it instead")
        }
        return d
    }

    package static func propertiesObject(_ v: JSONValue?, field: String, limits: IngestLimits) throws(FieldError) -> JSONValue {
        guard let v, !v.isNull else { return .object([]) }
        guard v.objectValue != nil else {
            throw FieldError(code: "invalid_type", field: field, message: "\(field) must be a JSON object")
        }
        if containsNUL(v) {
            throw FieldError(code: "invalid_value", field: field,
                             message: "\(field) must not contain NUL (\\u0000) characters")
        }
        if let bad = firstUnstorableNumber(v) {
            throw FieldError(code: "invalid_value", field: field,
                             message: "\(field) holds the number \(bad.prefix(40)), outside the range Postgres can store")
        }
        let size = JSONWriter.serialize(v).utf8.count
        if size > limits.maxPropertiesBytes {
            throw FieldError(code: "too_large", field: field,
                             message: "\(field) is \(size) bytes serialized; at most \(limits.maxPropertiesBytes) allowed")
        }
        return v
    }

    /// jsonb stores numbers as numeric (at most 131072 integer and 16383 fractional digits, and a
    /// display scale, the fraction as written minus the exponent, of at most 16383); a number
    /// beyond that would fail the whole request in the database, so it is refused here.
    package static func firstUnstorableNumber(_ v: JSONValue) -> String? {
        switch v {
        case .number(let n):
            guard ExactDecimal.isWithinLimits(n, maxIntegerDigits: 10_000, maxScale: 10_000),
                  let dscale = ExactDecimal.postgresDisplayScale(ofLexeme: n), dscale <= ExactDecimal.postgresMaxDisplayScale
            else { return n }
            return nil
        case .array(let a): return a.lazy.compactMap(firstUnstorableNumber).first
        case .object(let o): return o.lazy.compactMap { firstUnstorableNumber($0.1) }.first
        default: return nil
        }
    }

    package static func containsNUL(_ v: JSONValue) -> Bool {
        switch v {
        case .string(let s): return s.unicodeScalars.contains { $0.value == 0 }
        case .array(let a): return a.contains(where: containsNUL)
        case .object(let o): return o.contains { $0.0.unicodeScalars.contains { $0.value == 0 } || containsNUL($0.1) }
        default: return false
        }
    }
}
