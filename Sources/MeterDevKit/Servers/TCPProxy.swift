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
    /// Relayed pairs (client side, Postgres side) still open, with how many of their two relay
    /// threads have ended and whether they are being reset. Every shutdown and close happens under
    /// `lock`, and only for a pair still listed, so a closed fd number reused elsewhere is never touched.
    private struct Pair { let client: Int32; let server: Int32; var ended = 0; var aborted = false }
    private var open: [Int: Pair] = [:]
    private var nextID = 0
    public private(set) var port = 0
    private var _accepted = 0
    private var _resets = 0
    public var accepted: Int { lock.withLock { _accepted } }
    public var resets: Int { lock.withLock { _resets } }

    public init(upstreamSocket: String) { self.upstreamSocket = upstreamSocket }

    public var mode: Mode {
        get { lock.withLock { _mode } }
        set { lock.withLock { _mode = newValue } }
    }

    /// Listens on 127.0.0.1 (any free port) and starts accepting.
    public func start() throws {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
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
        lock.withLock {
            var n = 0
            for (id, var p) in open where !p.aborted {
                p.aborted = true
                open[id] = p
                // linger 0: the close to come sends RST; SHUT_RD wakes the relay threads without a FIN.
                var l = linger(l_onoff: 1, l_linger: 0)
                setsockopt(p.client, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
                shutdown(p.client, Int32(SHUT_RD))
                shutdown(p.server, Int32(SHUT_RDWR))
                n += 1
            }
            _resets += n
            return n
        }
    }

    public var openConnections: Int { lock.withLock { open.count } }

    private func acceptLoop() {
        while true {
            let c = accept(listenFD, nil, nil)
            if c < 0 { usleep(errno == EINTR ? 0 : 10_000); continue }  // EMFILE, ECONNABORTED...: keep serving
            _ = fcntl(c, F_SETFD, FD_CLOEXEC)
            lock.withLock { _accepted += 1 }
            if mode == .refuse {
                var l = linger(l_onoff: 1, l_linger: 0)
                setsockopt(c, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
                close(c)  // RST
                lock.withLock { _resets += 1 }
                continue
            }
            let u = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var ua = sockaddr_un()
            ua.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &ua.sun_path) { raw in
                let bytes = Array(upstreamSocket.utf8.prefix(raw.count - 1))
                raw.copyBytes(from: bytes + [0])
            }
            let rc = withUnsafePointer(to: &ua) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(u, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if rc != 0 { close(u); close(c); continue }
            let id = lock.withLock { () -> Int in nextID += 1; open[nextID] = Pair(client: c, server: u); return nextID }
            for (from, to) in [(c, u), (u, c)] {
                let t = Thread { [self] in
                    relay(from: from, to: to)
                    ended(id)
                }
                t.name = "chaos-proxy-relay"
                t.start()
            }
        }
    }

    /// A relay thread of pair `id` ended: the first tears the pair down (the other thread wakes),
    /// the second closes both sockets.
    private func ended(_ id: Int) {
        lock.withLock {
            guard var p = open[id] else { return }
            p.ended += 1
            if p.ended == 1 {
                open[id] = p
                if p.aborted { shutdown(p.client, Int32(SHUT_RD)) } else { shutdown(p.client, Int32(SHUT_RDWR)) }
                shutdown(p.server, Int32(SHUT_RDWR))
            } else {
                open.removeValue(forKey: id)
                close(p.client)
                close(p.server)
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
}
