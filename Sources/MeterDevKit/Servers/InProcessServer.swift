import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import MeterAPI
import BillingMock

/// Stops a server run in this process gracefully, as SIGTERM would: the server hands its service
/// group over once built (`onGroup`); a stop asked before that is applied then.
package final class ServerHandle: Sendable {
    private struct State { var group: ServiceGroup?; var stopRequested = false }
    private let state = Mutex(State())
    package init() {}

    /// What a server's `onGroup` is given.
    package func attach(_ g: ServiceGroup) async {
        let stop = state.withLock { $0.group = g; return $0.stopRequested }
        if stop { await g.triggerGracefulShutdown() }
    }

    package func stop() async {
        let g = state.withLock { $0.stopRequested = true; return $0.group }
        await g?.triggerGracefulShutdown()
    }
}

/// A server run inside this process (demo, benches, replay, tests): its port once it listens, and
/// a way to stop it gracefully.
public struct InProcessServer: Sendable {
    public let port: Int
    public let stop: @Sendable () async -> Void

    public struct NotListening: Error, CustomStringConvertible {
        public var description: String { "the server stopped before listening" }
    }

    /// Starts `run` (given a handle to stop it and the callback to report its port) and returns
    /// once it listens. An error before that is rethrown.
    package static func start(
        _ run: @escaping @Sendable (ServerHandle, @escaping @Sendable (Int) async -> Void) async throws -> Void
    ) async throws -> InProcessServer {
        let (stream, cont) = AsyncStream.makeStream(of: Int.self)
        let handle = ServerHandle()
        let task = Task {
            defer { cont.finish() }
            try await run(handle) { port in cont.yield(port); cont.finish() }
        }
        for await port in stream {
            return InProcessServer(port: port, stop: { await handle.stop(); _ = try? await task.value })
        }
        _ = try await task.value
        throw NotListening()
    }
}

extension MeterServer {
    /// The service in this process, on `config.port` (0 = any free port).
    package static func start(config: ServeConfiguration, conninfo: String, poolSize: Int,
                             logger: Logger) async throws -> InProcessServer {
        try await InProcessServer.start { handle, onRunning in
            try await run(config: config, conninfo: conninfo, poolSize: poolSize, logger: logger,
                          handleSignals: false, onGroup: handle.attach, onRunning: onRunning)
        }
    }
}

extension BillingMockServer {
    /// The mock billing engine in this process, on `config.port` (0 = any free port).
    package static func start(config: BillingMockConfiguration, conninfo: String, sqlDirectory: String,
                             logger: Logger) async throws -> InProcessServer {
        try await InProcessServer.start { handle, onRunning in
            try await run(config: config, conninfo: conninfo, sqlDirectory: sqlDirectory, logger: logger,
                          handleSignals: false, onGroup: handle.attach, onRunning: onRunning)
        }
    }
}
