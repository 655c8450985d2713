import Foundation
import GRDB
import Logging
import ProxyModel

/// Migration `0003_protobuf_bodies`: bodies were the JSON of the model types; they become the
/// protobuf of their wire message (`ObjectCoding`). Every body of `objects` and of the retained
/// `changes` is rewritten in the migration's transaction, so a failure leaves the database as
/// it was. Progress is logged: at 50k services a store holds a few hundred thousand bodies.
enum ProtobufBodies {
    static let name = "0003_protobuf_bodies"

    private struct Table {
        var name: String
        var keys: [String]
    }

    private static let tables = [
        Table(name: "objects", keys: ["kind", "namespace", "name"]),
        Table(name: "changes", keys: ["revision", "kind", "namespace", "name"]),
    ]

    static func migrate(_ db: Database, logger: Logger) throws {
        var total = 0
        for table in tables {
            total += try Int.fetchOne(db, sql: "SELECT count(*) FROM \(table.name) WHERE body IS NOT NULL") ?? 0
        }
        guard total > 0 else { return }
        logger.info("converting stored bodies from JSON to protobuf", metadata: ["bodies": "\(total)"])
        let started = ContinuousClock.now
        var lastReport = started
        var done = 0
        for table in tables {
            try convert(table, db) { converted in
                done += converted
                let now = ContinuousClock.now
                if now - lastReport >= .seconds(2) {
                    lastReport = now
                    logger.info("converting stored bodies", metadata: ["done": "\(done)", "of": "\(total)"])
                }
            }
        }
        logger.info(
            "converted stored bodies to protobuf",
            metadata: ["bodies": "\(done)", "seconds": "\((ContinuousClock.now - started).components.seconds)"])
    }

    /// Rewrites `table`'s bodies in batches along its primary key (the rows are updated in
    /// place, so no cursor stays open over them).
    private static func convert(_ table: Table, _ db: Database, progress: (Int) -> Void) throws {
        let keyList = table.keys.joined(separator: ", ")
        let placeholders = table.keys.map { _ in "?" }.joined(separator: ", ")
        let update = try db.makeStatement(
            sql: "UPDATE \(table.name) SET body = ? WHERE " + table.keys.map { "\($0) = ?" }.joined(separator: " AND "))
        var after: [any DatabaseValueConvertible]?
        while true {
            let condition = after == nil ? "" : "AND (\(keyList)) > (\(placeholders))"
            let rows = try Row.fetchAll(
                db,
                sql: "SELECT \(keyList), body FROM \(table.name) WHERE body IS NOT NULL \(condition) ORDER BY \(keyList) LIMIT 1000",
                arguments: StatementArguments(after ?? []))
            guard let last = rows.last else { return }
            for row in rows {
                let key = ObjectKey(kind: try ObjectCoding.kind(row["kind"]), namespace: row["namespace"], name: row["name"])
                let body: Data
                do {
                    body = try ObjectCoding.encode(try decodeJSON(kind: key.kind, row["body"]))
                } catch {
                    let revision = table.name == "changes" ? " at revision \(row["revision"] as Int64)" : ""
                    throw StoreError.storage("cannot convert the body of \(key)\(revision) in \(table.name): \(error)")
                }
                try update.execute(arguments: StatementArguments([body] + table.keys.map { row[$0] as DatabaseValue }))
            }
            progress(rows.count)
            after = table.keys.map { last[$0] as DatabaseValue }
        }
    }

    static func decodeJSON(kind: ObjectKind, _ data: Data) throws -> ProxyObject {
        let decoder = JSONDecoder()
        switch kind {
        case .service: return .service(try decoder.decode(Service.self, from: data))
        case .endpointSlice: return .endpointSlice(try decoder.decode(EndpointSlice.self, from: data))
        case .node: return .node(try decoder.decode(Node.self, from: data))
        }
    }
}
