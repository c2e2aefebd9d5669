// TCPProxy.swift: the db-network scenario's fault: a TCP listener on loopback that relays each
// connection to Postgres's Unix socket, and on command stalls every byte in both directions,
// resets every open connection, or resets new connections as they arrive. One thread accepts; each
// relayed connection has a thread per direction (blocking sockets; a handful of connections).

import Foundation
#if canImport(Glibc)
import Glibc
#endif

public final class TCPProxy: @unchecked Sendable {
    public enum Mode: String, Sendable { case pass, stall, refuse }

    public let upstreamSocket: String
    private let lock = NSLock()
    private var listenFD: Int32 = -1
    private var _mode: Mode = .pass
    private var open: [Int: (Int32, Int32)] = [:]
    private var nextID = 0
    public private(set) var port = 0
    public private(set) var accepted = 0
    public private(set) var resets = 0

    public init(upstreamSocket: String) { self.upstreamSocket = upstreamSocket }

    public var mode: Mode {
        get { lock.withLock { _mode } }
        set { lock.withLock { _mode = newValue } }
    }

    /// Listens on 127.0.0.1 (any free port) and starts accepting.
    public func start() throws {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0, listen(s, 64) == 0 else { throw ChildProcess.Failure(description: "proxy: cannot listen (errno \(errno))") }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) }
        }
        port = Int(UInt16(bigEndian: bound.sin_port))
        listenFD = s
        let t = Thread { [self] in acceptLoop() }
        t.name = "chaos-proxy-accept"
        t.start()
    }

    /// Resets every relayed connection now (RST to the client side); returns how many.
    @discardableResult
    public func resetAll() -> Int {
        let pairs = lock.withLock { Array(open.values) }
        for (a, b) in pairs { Self.abort(a); shutdown(b, Int32(SHUT_RDWR)) }
        lock.withLock { resets += pairs.count }
        return pairs.count
    }

    public var openConnections: Int { lock.withLock { open.count } }

    private func acceptLoop() {
        while true {
            let c = accept(listenFD, nil, nil)
            if c < 0 { if errno == EINTR { continue }; return }
            lock.withLock { accepted += 1 }
            if mode == .refuse {
                Self.abort(c); close(c)
                lock.withLock { resets += 1 }
                continue
            }
            let u = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var ua = sockaddr_un()
            ua.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &ua.sun_path) { raw in
                let bytes = Array(upstreamSocket.utf8.prefix(raw.count - 1))
                raw.copyBytes(from: bytes + [0])
            }
            let rc = withUnsafePointer(to: &ua) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(u, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if rc != 0 { close(u); Self.abort(c); close(c); continue }
            let id = lock.withLock { () -> Int in nextID += 1; open[nextID] = (c, u); return nextID }
            let done = ManagedAtomicFlag()
            for (from, to) in [(c, u), (u, c)] {
                let t = Thread { [self] in
                    relay(from: from, to: to)
                    // The first direction to end tears the pair down; the second closes it.
                    if done.setOnce() {
                        shutdown(c, Int32(SHUT_RDWR)); shutdown(u, Int32(SHUT_RDWR))
                    } else {
                        lock.withLock { _ = open.removeValue(forKey: id) }
                        close(c); close(u)
                    }
                }
                t.name = "chaos-proxy-relay"
                t.start()
            }
        }
    }

    private func relay(from: Int32, to: Int32) {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(from, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return }
            // Stalled: hold the bytes (the peer sees a silent network) until the stall ends.
            while mode == .stall { usleep(10_000) }
            var sent = 0
            while sent < n {
                let m = buf[sent..<n].withUnsafeBytes { send(to, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if m <= 0 { return }
                sent += m
            }
        }
    }

    /// SO_LINGER 0, then shutdown: the next close sends RST instead of FIN.
    private static func abort(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        shutdown(fd, Int32(SHUT_RDWR))
    }
}

/// A flag set once, from any thread.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false
    /// True for the first caller only.
    func setOnce() -> Bool { lock.withLock { if set { return false }; set = true; return true } }
}
