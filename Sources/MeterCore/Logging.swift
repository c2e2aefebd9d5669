import Foundation
import Logging
import MeterWire

/// One JSON object per line on stderr: {"ts","level","label","msg",...metadata}. Structured
/// enough for any log shipper; `--log-format text` gives swift-log's plain stream handler.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    package let label: String
    private static let lock = NSLock()

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        write(level: event.level, message: event.message, metadata: event.metadata, error: event.error)
    }

    private func write(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?,
                       error: (any Error)?) {
        var s = "{\"ts\":\"\(RFC3339Timestamp(epochMicroseconds: Int64(Date().timeIntervalSince1970 * 1_000_000)).iso8601)\""
        s += ",\"level\":\"\(level.rawValue)\",\"label\":\(JSONWriter.quote(label)),\"msg\":\(JSONWriter.quote(message.description))"
        var merged = metadata.merging(explicit ?? [:]) { $1 }
        if let error { merged["error"] = "\(error)" }
        for (k, v) in merged.sorted(by: { $0.key < $1.key }) {
            s += ",\(JSONWriter.quote(k)):\(JSONWriter.quote(v.description))"
        }
        s += "}\n"
        Self.lock.withLock { FileHandle.standardError.write(s.data(using: .utf8)!) }
    }

    /// Bootstraps swift-log once per process.
    public static func bootstrap(format: String, level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            if format == "text" {
                var h = StreamLogHandler.standardError(label: label)
                h.logLevel = level
                return h
            }
            var h = JSONLogHandler(label: label)
            h.logLevel = level
            return h
        }
    }
}
