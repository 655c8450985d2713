import Foundation
import ProxyCTL

exit(await ProxyctlCommand.runMain(Array(CommandLine.arguments.dropFirst())))
