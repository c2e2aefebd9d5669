import Hummingbird
import NIOCore
import MeterWire
import MeterCore

/// JSON bodies of the API. Built by hand with `JSONWriter.quote` so every number (event ids) and
/// string is written exactly; the shapes are documented in docs/openapi.yaml.
package enum APIResponse {
    package static func json(_ status: HTTPResponse.Status, _ body: String, headers: HTTPFields = [:]) -> Response {
        var h = headers
        h[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// The error envelope for request-level failures: {"error":{"code","message","field"}}.
    package static func error(_ status: HTTPResponse.Status, code: String, message: String, field: String? = nil,
                      headers: HTTPFields = [:]) -> Response {
        json(status, "{\"error\":" + errorObject(FieldError(code: code, field: field, message: message)) + "}",
             headers: headers)
    }

    package static func errorObject(_ e: FieldError) -> String {
        "{\"code\":\(JSONWriter.quote(e.code)),\"message\":\(JSONWriter.quote(e.message)),"
            + "\"field\":\(e.field.map(JSONWriter.quote) ?? "null")}"
    }

    package static func verdictObject(_ v: IngestVerdict, includeIndex: Bool) -> String {
        verdictObject(index: includeIndex ? v.index : nil, status: v.status.rawValue, id: v.eventID, error: v.error)
    }

    /// One element's verdict (ingest or cancellation): {"index"?, "status", "id", "error"?}.
    package static func verdictObject(index: Int?, status: String, id: Int64?, error: FieldError?) -> String {
        var s = "{"
        if let index { s += "\"index\":\(index)," }
        s += "\"status\":\"\(status)\""
        s += ",\"id\":" + (id.map { String($0) } ?? "null")
        if let error { s += ",\"error\":" + errorObject(error) }
        return s + "}"
    }

    /// A single event: 201 accepted, 200 duplicate, 409 conflict, 422 rejected.
    package static func single(_ v: IngestVerdict) -> Response {
        let status: HTTPResponse.Status = switch v.status {
        case .accepted: .created
        case .duplicate: .ok
        case .conflict: .conflict
        case .rejected: v.error?.code == "customer_not_allowed" ? .forbidden : .unprocessableContent
        }
        return json(status, verdictObject(v, includeIndex: false))
    }

    /// A batch: 200 when every event is accepted or duplicate, else 207 (Multi-Status) with the
    /// verdict of each event by index. Valid events are stored either way.
    package static func batch(_ verdicts: [IngestVerdict]) -> Response {
        var counts: [IngestVerdict.Status: Int] = [.accepted: 0, .duplicate: 0, .conflict: 0, .rejected: 0]
        for v in verdicts { counts[v.status, default: 0] += 1 }
        var s = "{\"summary\":{\"received\":\(verdicts.count),\"accepted\":\(counts[.accepted]!),"
            + "\"duplicate\":\(counts[.duplicate]!),\"conflict\":\(counts[.conflict]!),"
            + "\"rejected\":\(counts[.rejected]!)},\"results\":["
        for (i, v) in verdicts.enumerated() {
            if i > 0 { s += "," }
            s += verdictObject(v, includeIndex: true)
        }
        s += "]}"
        let allGood = counts[.conflict]! == 0 && counts[.rejected]! == 0
        return json(allGood ? .ok : .init(code: 207, reasonPhrase: "Multi-Status"), s)
    }
}
