import CLibpq

/// A fully materialized result: values are copied out of the `PGresult`, which is freed at once,
/// so no libpq pointer outlives the call that produced it.
public struct PGResult: Sendable {
    public let columns: [String]
    public let rows: [PGRow]
    /// The command tag's row count (`INSERT 0 5` → 5), for statements without RETURNING.
    public let affectedRows: Int

    package init(_ res: OpaquePointer) {
        let nFields = Int(PQnfields(res))
        let nTuples = Int(PQntuples(res))
        var columns: [String] = []
        columns.reserveCapacity(nFields)
        for c in 0..<nFields { columns.append(String(cString: PQfname(res, Int32(c)))) }
        var index: [String: Int] = [:]
        for (i, c) in columns.enumerated() where index[c] == nil { index[c] = i }
        let names = ColumnIndex(columns: index)
        var rows: [PGRow] = []
        rows.reserveCapacity(nTuples)
        for r in 0..<nTuples {
            var values: [String?] = []
            values.reserveCapacity(nFields)
            for c in 0..<nFields {
                if PQgetisnull(res, Int32(r), Int32(c)) == 1 {
                    values.append(nil)
                } else {
                    values.append(String(cString: PQgetvalue(res, Int32(r), Int32(c))))
                }
            }
            rows.append(PGRow(index: names, values: values))
        }
        self.columns = columns
        self.rows = rows
        self.affectedRows = Int(String(cString: PQcmdTuples(res))) ?? 0
    }

    /// The only row, or a decoding error naming what was expected.
    public func single() throws(PGError) -> PGRow {
        guard rows.count == 1 else {
            throw PGError(kind: .decoding, message: "expected exactly one row, got \(rows.count)")
        }
        return rows[0]
    }
}

package final class ColumnIndex: Sendable {
    package let columns: [String: Int]
    package init(columns: [String: Int]) { self.columns = columns }
}

/// One row; typed getters throw `PGError.decoding` naming the column instead of trapping.
public struct PGRow: Sendable {
    package let index: ColumnIndex
    public let values: [String?]

    public func raw(_ column: String) throws(PGError) -> String? {
        guard let i = index.columns[column] else {
            throw PGError(kind: .decoding, message: "no column \"\(column)\" in result")
        }
        return values[i]
    }

    public func optionalString(_ column: String) throws(PGError) -> String? { try raw(column) }

    public func string(_ column: String) throws(PGError) -> String {
        guard let v = try raw(column) else {
            throw PGError(kind: .decoding, message: "column \"\(column)\" is NULL")
        }
        return v
    }

    public func optionalInt(_ column: String) throws(PGError) -> Int64? {
        guard let v = try raw(column) else { return nil }
        guard let n = Int64(v) else {
            throw PGError(kind: .decoding, message: "column \"\(column)\" is not an integer: \(v)")
        }
        return n
    }

    public func int(_ column: String) throws(PGError) -> Int64 {
        guard let n = try optionalInt(column) else {
            throw PGError(kind: .decoding, message: "column \"\(column)\" is NULL")
        }
        return n
    }

    public func bool(_ column: String) throws(PGError) -> Bool {
        let v = try string(column)
        switch v {
        case "t", "true": return true
        case "f", "false": return false
        default: throw PGError(kind: .decoding, message: "column \"\(column)\" is not a boolean: \(v)")
        }
    }
}
