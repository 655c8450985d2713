/// Kubernetes' name rules (apimachinery `validation.IsDNS1123Label` and friends).
/// Each function returns nil when the value is valid, else the reason.
///
/// Every character they allow is ASCII, so they check UTF-8 bytes: a byte of a non-ASCII
/// character is never allowed. Writes and snapshot decoding check every endpoint's names.
public enum Names {
    public static let maxLabelLength = 63
    public static let maxSubdomainLength = 253

    private static func isLowerAlnum(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    private static func isAlnum(_ byte: UInt8) -> Bool {
        isLowerAlnum(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    }

    /// Whether `value` has more than `limit` characters (never more than its UTF-8 bytes).
    private static func isLonger(_ value: String, than limit: Int) -> Bool {
        value.utf8.count > limit && value.count > limit
    }

    /// Lowercase alphanumerics and '-', starting and ending alphanumeric, 1 to 63 bytes.
    private static func isLabel(_ bytes: some Collection<UInt8>) -> Bool {
        guard let first = bytes.first, isLowerAlnum(first), bytes.count <= maxLabelLength else { return false }
        var last = first
        for byte in bytes {
            guard isLowerAlnum(byte) || byte == UInt8(ascii: "-") else { return false }
            last = byte
        }
        return isLowerAlnum(last)
    }

    /// RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric, at most 63.
    public static func dnsLabelProblem(_ value: String) -> String? {
        if value.isEmpty { return "must not be empty" }
        if isLonger(value, than: maxLabelLength) { return "must be no more than \(maxLabelLength) characters" }
        guard isLabel(value.utf8) else {
            return "a DNS-1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character, got \"\(value)\""
        }
        return nil
    }

    /// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
    public static func dnsSubdomainProblem(_ value: String) -> String? {
        if value.isEmpty { return "must not be empty" }
        if isLonger(value, than: maxSubdomainLength) { return "must be no more than \(maxSubdomainLength) characters" }
        for part in value.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            if !isLabel(part) {
                return "a DNS-1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character, got \"\(value)\""
            }
        }
        return nil
    }

    /// IANA service name (named targetPort): at most 15 lowercase alphanumerics or '-',
    /// at least one letter, no leading, trailing or double '-'.
    public static func ianaServiceNameProblem(_ value: String) -> String? {
        if value.isEmpty { return "must not be empty" }
        if isLonger(value, than: 15) { return "must be no more than 15 characters, got \"\(value)\"" }
        guard value.utf8.allSatisfy({ isLowerAlnum($0) || $0 == UInt8(ascii: "-") }) else {
            return "must contain only lower case alphanumeric characters or '-', got \"\(value)\""
        }
        if value.hasPrefix("-") || value.hasSuffix("-") { return "must not begin or end with '-', got \"\(value)\"" }
        if value.contains("--") { return "must not contain consecutive '-', got \"\(value)\"" }
        if !value.utf8.contains(where: { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) }) { return "must contain at least one letter, got \"\(value)\"" }
        return nil
    }

    /// Qualified name (label key part): alphanumerics, '-', '_', '.', alphanumeric at both ends, at most 63.
    public static func qualifiedNamePartProblem(_ value: String) -> String? {
        if value.isEmpty { return "name part must not be empty" }
        if isLonger(value, than: maxLabelLength) { return "name part must be no more than \(maxLabelLength) characters" }
        let bytes = value.utf8
        guard bytes.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }),
            let first = bytes.first, let last = bytes.last, isAlnum(first), isAlnum(last)
        else {
            return "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        }
        return nil
    }

    /// Label key: `[prefix/]name` with a DNS subdomain prefix.
    public static func labelKeyProblem(_ key: String) -> String? {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        switch parts.count {
        case 1:
            return qualifiedNamePartProblem(key)
        case 2:
            if let problem = dnsSubdomainProblem(String(parts[0])) { return "prefix: \(problem)" }
            return qualifiedNamePartProblem(String(parts[1]))
        default:
            return "must be [prefix/]name"
        }
    }

    /// Label value: empty, or a qualified name part of at most 63 characters.
    public static func labelValueProblem(_ value: String) -> String? {
        if value.isEmpty { return nil }
        if isLonger(value, than: maxLabelLength) { return "value must be no more than \(maxLabelLength) characters" }
        if qualifiedNamePartProblem(value) != nil {
            return "value must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, got \"\(value)\""
        }
        return nil
    }
}
