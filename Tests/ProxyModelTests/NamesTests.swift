import ProxyModel
import Testing

/// Kubernetes' name rules, valid and invalid values of each, non-ASCII ones among them.
@Suite struct NamesTests {
    static let long = String(repeating: "a", count: 64)
    /// 40 characters but 80 UTF-8 bytes: within the character limit, outside the alphabet.
    static let wide = String(repeating: "é", count: 40)

    @Test(arguments: [
        ("web", true), ("a", true), ("0web-1", true), ("a-b-c", true), (String(long.dropLast()), true),
        ("", false), ("-web", false), ("web-", false), ("Web", false), ("we.b", false), ("we_b", false),
        ("café", false), ("ｗｅｂ", false), (long, false), (wide, false),
    ])
    func dnsLabels(value: String, valid: Bool) {
        #expect((Names.dnsLabelProblem(value) == nil) == valid, "\(value)")
    }

    @Test(arguments: [
        ("node-a", true), ("node-a.zone-1.example", true), ("1.2.3", true),
        ("", false), ("a..b", false), (".a", false), ("a.", false), ("a.-b", false), ("Node", false), ("nöde", false),
        (String(repeating: "a.", count: 127) + "a", false),
    ])
    func dnsSubdomains(value: String, valid: Bool) {
        #expect((Names.dnsSubdomainProblem(value) == nil) == valid, "\(value)")
    }

    @Test(arguments: [
        ("http", true), ("h2c", true), ("web-80", true),
        ("", false), ("80", false), ("-http", false), ("http-", false), ("ht--tp", false), ("HTTP", false),
        ("httpé", false), ("a-very-long-name1", false),
    ])
    func ianaServiceNames(value: String, valid: Bool) {
        #expect((Names.ianaServiceNameProblem(value) == nil) == valid, "\(value)")
    }

    @Test(arguments: [
        ("", true), ("zone-a", true), ("Zone_A.1", true), ("a", true),
        ("-a", false), ("a_", false), ("a b", false), ("zöne", false), (long, false), (wide, false),
    ])
    func labelValues(value: String, valid: Bool) {
        #expect((Names.labelValueProblem(value) == nil) == valid, "\(value)")
    }

    @Test(arguments: [
        ("app", true), ("kubernetes.io/service-name", true), ("App_Name", true),
        ("", false), ("/app", false), ("a/b/c", false), ("Example.com/app", false), ("äpp", false),
    ])
    func labelKeys(value: String, valid: Bool) {
        #expect((Names.labelKeyProblem(value) == nil) == valid, "\(value)")
    }

    /// The length is counted in characters: a value within it but outside the alphabet is told so.
    @Test func lengthIsCountedInCharacters() {
        #expect(Names.dnsLabelProblem(Self.long) == "must be no more than 63 characters")
        #expect(Names.dnsLabelProblem(Self.wide)?.hasPrefix("a DNS-1123 label must consist of") == true)
        #expect(Names.labelValueProblem(Self.wide)?.hasPrefix("value must consist of") == true)
        #expect(Names.ianaServiceNameProblem("ééééééééé")?.hasPrefix("must contain only") == true)
    }
}
