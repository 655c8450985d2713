/// Kubernetes' name rules (apimachinery `validation.IsDNS1123Label` and friends).
/// Each function returns nil when the value is valid, else the reason.
public enum Names {
    public static let maxLabelLength = 63
    public static let maxSubdomainLength = 253

    private static func isLowerAlnum(_ c: Character) -> Bool {
        c.isASCII && (c.isLowercase || c.isNumber)
    }

    private static func isAlnum(_ c: Character) -> Bool {
        c.isASCII && (c.isLetter || c.isNumber)
    }

    /// RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric, at most 63.
    public static func dnsLabelProblem(_ value: String) -> String? {
        if value.isEmpty { return "must not be empty" }
        if value.count > maxLabelLength { return "must be no more than \(maxLabelLength) characters" }
        guard value.allSatisfy({ isLowerAlnum($0) || $0 == "-" }), let first = value.first, let last = value.last,
            isLowerAlnum(first), isLowerAlnum(last)
        else {
            return "a DNS-1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character, got \"\(value)\""
        }
        return nil
    }

    /// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
    public static func dnsSubdomainProblem(_ value: String) -> String? {
        if value.isEmpty { return "must not be empty" }
        if value.count > maxSubdomainLength { return "must be no more than \(maxSubdomainLength) characters" }
        for part in value.split(separator: ".", omittingEmptySubsequences: false) {
            if dnsLabelProblem(String(part)) != nil {
                return "a DNS-1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character, got \"\(value)\""
            }
        }
        return nil
    }

    /// IANA service name (named targetPort): at most 15 lowercase alphanumerics or '-',
    /// at least one letter, no leading, trailing or double '-'.
    public static func ianaServiceNameProblem(_ value: String) -> String? {
        if value.isEmpty { return "must not be empty" }
        if value.count > 15 { return "must be no more than 15 characters, got \"\(value)\"" }
        guard value.allSatisfy({ isLowerAlnum($0) || $0 == "-" }) else {
            return "must contain only lower case alphanumeric characters or '-', got \"\(value)\""
        }
        if value.hasPrefix("-") || value.hasSuffix("-") { return "must not begin or end with '-', got \"\(value)\"" }
        if value.contains("--") { return "must not contain consecutive '-', got \"\(value)\"" }
        if !value.contains(where: { $0.isLetter }) { return "must contain at least one letter, got \"\(value)\"" }
        return nil
    }

    /// Qualified name (label key part): alphanumerics, '-', '_', '.', alphanumeric at both ends, at most 63.
    public static func qualifiedNamePartProblem(_ value: String) -> String? {
        if value.isEmpty { return "name part must not be empty" }
        if value.count > maxLabelLength { return "name part must be no more than \(maxLabelLength) characters" }
        guard value.allSatisfy({ isAlnum($0) || $0 == "-" || $0 == "_" || $0 == "." }), let first = value.first,
            let last = value.last, isAlnum(first), isAlnum(last)
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
        if value.count > maxLabelLength { return "value must be no more than \(maxLabelLength) characters" }
        if qualifiedNamePartProblem(value) != nil {
            return "value must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, got \"\(value)\""
        }
        return nil
    }
}
