import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A minimal blocking HTTP/1.1 keep-alive client over a loopback TCP socket, for the benchmark's
/// load generator and the demo. Blocking by design: each instance lives on its own thread, so the
/// generator spends its CPU on requests, not on an event loop. Not a general-purpose client:
/// responses must carry Content-Length (all of meter's do).
public final class LoadClient {
    public struct Response: Sendable {
        public let status: Int
        public let body: String
    }
    public struct Failure: Error, CustomStringConvertible { public let description: String }

    package let host: String
    package let port: Int
    /// Send/receive timeout per socket call (nil: block as long as it takes).
    package let timeoutSeconds: Int?
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []
    private var chunk = [UInt8](repeating: 0, count: 65536)

    public init(host: String = "127.0.0.1", port: Int, timeoutSeconds: Int? = nil) {
        self.host = host
        self.port = port
        self.timeoutSeconds = timeoutSeconds
    }

    deinit { if fd >= 0 { close(fd) } }

    private func connectIfNeeded() throws {
        if fd >= 0 { return }
        // close-on-exec: a process we start (the chaos scenarios start services) must not hold it
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw Failure(description: "socket() failed") }
        var one: Int32 = 1
        setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        if let t = timeoutSeconds {
            var tv = timeval(tv_sec: t, tv_usec: 0)
            setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(s); throw Failure(description: "connect to \(host):\(port) failed (errno \(errno))") }
        fd = s
        buffer.removeAll(keepingCapacity: true)
    }

    /// Sends one request and reads its response; reconnects once if the kept-alive socket died.
    public func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: String = "") throws -> Response {
        do {
            return try attempt(method, path, headers, body)
        } catch {
            if fd >= 0 { close(fd); fd = -1 }
            return try attempt(method, path, headers, body)
        }
    }

    private func attempt(_ method: String, _ path: String, _ headers: [(String, String)], _ body: String) throws -> Response {
        try connectIfNeeded()
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Length: \(body.utf8.count)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        head += "\r\n"
        var bytes = Array(head.utf8)
        bytes.append(contentsOf: body.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send failed") }
            sent += n
        }
        // Read headers.
        var headerEnd: Int?
        while headerEnd == nil {
            if let r = findHeaderEnd() { headerEnd = r; break }
            try fill()
        }
        let headerText = String(decoding: buffer[0..<headerEnd!], as: UTF8.self)
        let lines = headerText.split(separator: "\r\n")
        let statusParts = lines.first?.split(separator: " ") ?? []
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
            throw Failure(description: "bad status line")
        }
        var length = 0
        var closeAfter = false
        for l in lines.dropFirst() {
            let lower = l.lowercased()
            if lower.hasPrefix("content-length:") { length = Int(lower.dropFirst(15).trimmingCharacters(in: .whitespaces)) ?? 0 }
            if lower.hasPrefix("connection:") && lower.contains("close") { closeAfter = true }
        }
        let bodyStart = headerEnd! + 4
        while buffer.count < bodyStart + length { try fill() }
        let text = String(decoding: buffer[bodyStart..<(bodyStart + length)], as: UTF8.self)
        buffer.removeFirst(bodyStart + length)
        if closeAfter { close(fd); fd = -1 }
        return Response(status: status, body: text)
    }

    private func fill() throws {
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw Failure(description: "connection closed by server") }
        buffer.append(contentsOf: chunk[0..<n])
    }

    /// Offset of the first CR LF CR LF in the buffer.
    private func findHeaderEnd() -> Int? {
        buffer.withUnsafeBufferPointer { b in
            guard b.count >= 4 else { return nil }
            for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 {
                return i
            }
            return nil
        }
    }
}
