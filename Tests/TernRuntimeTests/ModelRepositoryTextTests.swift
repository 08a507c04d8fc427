import Foundation
import Testing
@testable import TernRuntime

/// A config.pbtxt that is not text is refused naming the first bad byte's offset.
@Suite struct ModelRepositoryTextTests {
    @Test func theFirstInvalidUTF8ByteIsFoundPastMultiByteCharacters() {
        #expect(ModelRepository.firstInvalidUTF8(Data("name: \"m\"".utf8) + Data([0xFF])) == 9)
        // "é" and "€" are valid two- and three-byte characters before the bad byte at offset 9.
        #expect(ModelRepository.firstInvalidUTF8(Data("a é € ".utf8) + Data([0xC3, 0x28])) == 9)
        #expect(ModelRepository.firstInvalidUTF8(Data([0x80])) == 0)
        #expect(ModelRepository.firstInvalidUTF8(Data("ab".utf8) + Data([0xE2, 0x82])) == 2, "a character cut short at the end")
    }
}
