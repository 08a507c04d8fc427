import TernCLI

await TernCommand.start()
