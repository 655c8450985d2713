import Foundation
import ProxyModel

/// Walks one decoded YAML/JSON document, reading typed fields by path and recording every
/// problem (wrong type, unknown field) as a violation naming the field.
struct ManifestReader {
    var violations = Violations()

    /// The value as a `T`; nil (and a violation saying `expectation`) when it is something else,
    /// nil alone when it is absent or null.
    private mutating func typed<T>(_ value: Any?, _ path: String, _ expectation: String) -> T? {
        guard let value, !(value is NSNull) else { return nil }
        guard let typed = value as? T else {
            violations.add(path, expectation)
            return nil
        }
        return typed
    }

    mutating func map(_ value: Any?, _ path: String) -> [String: Any]? {
        typed(value, path, "must be a mapping")
    }

    mutating func list(_ value: Any?, _ path: String) -> [Any] {
        typed(value, path, "must be a list") ?? []
    }

    mutating func string(_ value: Any?, _ path: String) -> String? {
        typed(value, path, "must be a string")
    }

    mutating func strings(_ value: Any?, _ path: String) -> [String] {
        list(value, path).enumerated().compactMap { string($1, "\(path)[\($0)]") }
    }

    mutating func int(_ value: Any?, _ path: String) -> Int? {
        typed(value, path, "must be an integer")
    }

    /// An integer that must fit a port field (so that the wire's unsigned type can hold it).
    mutating func port(_ value: Any?, _ path: String) -> UInt32? {
        guard let number = int(value, path) else { return nil }
        guard (1...65535).contains(number) else {
            violations.add(path, "must be between 1 and 65535, got \(number)")
            return nil
        }
        return UInt32(number)
    }

    mutating func bool(_ value: Any?, _ path: String) -> Bool? {
        typed(value, path, "must be true or false")
    }

    mutating func labels(_ value: Any?, _ path: String) -> [String: String] {
        guard let map = map(value, path) else { return [:] }
        var labels: [String: String] = [:]
        for (key, value) in map {
            if let text = value as? String {
                labels[key] = text
            } else if let number = value as? Int {
                labels[key] = String(number)
            } else if let flag = value as? Bool {
                labels[key] = String(flag)
            } else {
                violations.add("\(path)[\(key)]", "must be a string")
            }
        }
        return labels
    }

    /// Reports keys that are neither understood nor known to be safe to ignore.
    mutating func onlyKnown(_ map: [String: Any], _ path: String, known: Set<String>, ignored: Set<String> = []) {
        for key in map.keys.sorted() where !known.contains(key) && !ignored.contains(key) {
            violations.add(path.isEmpty ? key : "\(path).\(key)", "unknown or unsupported field")
        }
    }
}
