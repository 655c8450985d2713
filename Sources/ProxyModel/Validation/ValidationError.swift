/// One rule broken by one field, e.g. `spec.ports[1].port: must be between 1 and 65535`.
public struct FieldViolation: Hashable, Sendable, CustomStringConvertible {
    /// Kubernetes-style field path (`metadata.name`, `spec.ports[1].port`).
    public var field: String
    public var message: String

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { "\(field): \(message)" }
}

/// The error of the model: every rule an object breaks, each naming its field.
public struct ValidationError: Error, Hashable, Sendable, CustomStringConvertible {
    public var violations: [FieldViolation]

    public init(_ violations: [FieldViolation]) { self.violations = violations }

    public init(field: String, message: String) {
        self.violations = [FieldViolation(field: field, message: message)]
    }

    /// Prefixes every field path, e.g. with `items[3].` for the fourth object of a request.
    public func prefixed(_ prefix: String) -> ValidationError {
        ValidationError(violations.map { FieldViolation(field: prefix + $0.field, message: $0.message) })
    }

    public var description: String { violations.map(\.description).joined(separator: "; ") }
}

/// Collects violations while a validator walks an object. Field paths are passed as
/// autoclosures: they are spelled out only for a violation, not for every field checked.
public struct Violations: Sendable {
    public private(set) var list: [FieldViolation] = []

    public init() {}

    public mutating func add(_ field: String, _ message: String) {
        list.append(FieldViolation(field: field, message: message))
    }

    public mutating func merge(_ error: ValidationError) { list += error.violations }

    /// Throws when anything was collected.
    public func check() throws(ValidationError) {
        if !list.isEmpty { throw ValidationError(list) }
    }

    public mutating func port(_ value: Int, _ field: @autoclosure () -> String) {
        if !(1...65535).contains(value) { add(field(), "must be between 1 and 65535, got \(value)") }
    }

    public mutating func dnsLabel(_ value: String, _ field: @autoclosure () -> String) {
        if let problem = Names.dnsLabelProblem(value) { add(field(), problem) }
    }

    public mutating func dnsSubdomain(_ value: String, _ field: @autoclosure () -> String) {
        if let problem = Names.dnsSubdomainProblem(value) { add(field(), problem) }
    }

    public mutating func labels(_ labels: [String: String], _ field: String) {
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) {
            if let problem = Names.labelKeyProblem(key) { add("\(field)[\(key)]", "invalid key: \(problem)") }
            if let problem = Names.labelValueProblem(value) { add("\(field)[\(key)]", problem) }
        }
    }
}
