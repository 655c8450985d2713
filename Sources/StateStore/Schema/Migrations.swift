import GRDB
import Logging

/// The schema migrations: those of `schema/sqlite` and those written in Swift (which rewrite
/// stored data), applied in name order, each exactly once.
enum Migrations {
    static func migrator(logger: Logger) -> DatabaseMigrator {
        var steps: [(name: String, migrate: @Sendable (Database) throws -> Void)] = embedded.map { migration in
            (migration.name, { db in try db.execute(sql: migration.sql) })
        }
        steps.append((ProtobufBodies.name, { db in try ProtobufBodies.migrate(db, logger: logger) }))
        var migrator = DatabaseMigrator()
        for step in steps.sorted(by: { $0.name < $1.name }) {
            migrator.registerMigration(step.name, migrate: step.migrate)
        }
        return migrator
    }
}
