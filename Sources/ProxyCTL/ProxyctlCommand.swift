import ArgumentParser
import Foundation
import ProxyAPI

/// The admin CLI: kubectl-like commands over the Registry API.
///
/// Global options (`--server`, `-n`, `-o`, …) may come before the subcommand, as with kubectl.
public struct ProxyctlCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "proxyctl",
        abstract: "Administer the kube-proxy control server: apply Kubernetes manifests, inspect services and nodes.",
        version: BuildInfo.version,
        subcommands: [Apply.self, Create.self, SetCommand.self, Get.self, Describe.self, Delete.self, Watch.self, Version.self, Completion.self])

    public init() {}

    /// Parses and runs one command line. Exit codes: 0 success, 1 error, 2 usage.
    public static func runMain(_ arguments: [String]) async -> Int32 {
        do {
            var command = try parseAsRoot(globalOptionsAfterSubcommand(arguments))
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            return 0
        } catch let failure as CommandFailure {
            FileHandle.standardError.write(Data("error: \(failure.description)\n".utf8))
            return 1
        } catch let error as ManifestError {
            FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
            return 1
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { print(message) }
                return 0
            }
            FileHandle.standardError.write(Data((message.isEmpty ? "\(error)" : message).utf8 + [0x0A]))
            return code == .validationFailure ? 2 : 1
        }
    }

    /// `proxyctl --server X create service …` → `proxyctl create service … --server X`:
    /// ArgumentParser reads options only after the (leaf) subcommand that declares them.
    static func globalOptionsAfterSubcommand(_ arguments: [String]) -> [String] {
        let names = Set(configuration.subcommands.map { $0._commandName })
        guard let index = arguments.firstIndex(where: { names.contains($0) }), index > 0 else { return arguments }
        let rest = arguments[index...]
        if let terminator = rest.firstIndex(of: "--") {
            return Array(arguments[index..<terminator] + arguments[..<index] + arguments[terminator...])
        }
        return Array(rest + arguments[..<index])
    }
}
