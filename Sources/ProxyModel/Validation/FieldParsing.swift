/// Parsing of text fields (from the wire or from manifests) into model values, recording a
/// violation that names the field when the text is not acceptable.
extension Violations {
    /// An IP address in canonical form; other spellings are rejected rather than rewritten,
    /// so that what a client wrote is what it reads back.
    public mutating func ip(_ text: String, _ field: @autoclosure () -> String) -> IPAddress? {
        guard let address = IPAddress(text) else {
            add(field(), "must be a valid IP address, got \"\(text)\"")
            return nil
        }
        // IPv4 parses from its canonical spelling only; IPv6 has many spellings of one address.
        if case .v6 = address, address.description != text {
            add(field(), "must be in canonical form \"\(address)\", got \"\(text)\"")
            return nil
        }
        return address
    }

    public mutating func ips(_ texts: [String], _ field: @autoclosure () -> String) -> [IPAddress] {
        texts.enumerated().compactMap { ip($1, "\(field())[\($0)]") }
    }

    /// A CIDR with host bits zero, in canonical form.
    public mutating func cidr(_ text: String, _ field: @autoclosure () -> String) -> CIDR? {
        guard let cidr = CIDR(text) else {
            add(field(), "must be a valid CIDR with zero host bits (e.g. 10.0.0.0/8), got \"\(text)\"")
            return nil
        }
        guard cidr.description == text else {
            add(field(), "must be in canonical form \"\(cidr)\", got \"\(text)\"")
            return nil
        }
        return cidr
    }

    /// One of an enumeration's spellings; `empty` is used when the text is empty.
    public mutating func choice<T: RawRepresentable & CaseIterable>(
        _ text: String, _ field: @autoclosure () -> String, empty: T?
    ) -> T? where T.RawValue == String {
        if text.isEmpty {
            if empty == nil { add(field(), "required: one of \(T.allCases.map(\.rawValue).joined(separator: ", "))") }
            return empty
        }
        guard let value = T(rawValue: text) else {
            add(field(), "unsupported value \"\(text)\": must be one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
            return nil
        }
        return value
    }
}
