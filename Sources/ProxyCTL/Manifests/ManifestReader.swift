import Foundation
import ProxyModel

/// Walks one decoded YAML/JSON document, reading typed fields by path and recording every
/// problem (wrong type, unknown field) as a violation naming the field.
struct ManifestReader {
    var violations = Violations()

    mutating func map(_ value: Any?, _ path: String) -> [String: Any]? {
        guard let value, !(value is NSNull) else { return nil }
        guard let map = value as? [String: Any] else {
            violations.add(path, "must be a mapping")
            return nil
        }
        return map
    }

    mutating func list(_ value: Any?, _ path: String) -> [Any] {
        guard let value, !(value is NSNull) else { return [] }
        guard let list = value as? [Any] else {
            violations.add(path, "must be a list")
            return []
        }
        return list
    }

    mutating func string(_ value: Any?, _ path: String) -> String? {
        guard let value, !(value is NSNull) else { return nil }
        guard let text = value as? String else {
            violations.add(path, "must be a string")
            return nil
        }
        return text
    }

    mutating func strings(_ value: Any?, _ path: String) -> [String] {
        list(value, path).enumerated().compactMap { string($1, "\(path)[\($0)]") }
    }

    mutating func int(_ value: Any?, _ path: String) -> Int? {
        guard let value, !(value is NSNull) else { return nil }
        guard let number = value as? Int else {
            violations.add(path, "must be an integer")
            return nil
        }
        return number
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
        guard let value, !(value is NSNull) else { return nil }
        guard let flag = value as? Bool else {
            violations.add(path, "must be true or false")
            return nil
        }
        return flag
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
