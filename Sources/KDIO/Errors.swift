/// What kind of failure an error is, for the one place (kdtool's `Failure.swift`) that turns
/// errors into exit statuses: an input that is unreadable or invalid (exit 2), a precondition of a
/// model or method that does not hold (exit 1), or an output that could not be written (exit 5).
public enum ErrorCategory: String, Sendable {
    case invalidInput = "invalid-input"
    case precondition
    case output
}

/// The shape every kdtool module's error has: a stable `errorCode` for scripts and tests (e.g.
/// `data.format`, `nn.diverged`, `KDB-E04`), the file it concerns when there is one, and the
/// cause in words. Each module has one such type (BundleError, DataError, ImageError, TensorError,
/// NNError, DistillError, QuantError, InteropError, InputError, OutputError).
public protocol KDError: Error, CustomStringConvertible, Sendable {
    var errorCode: String { get }
    var category: ErrorCategory { get }
    /// The file the error concerns ("" when none).
    var file: String { get }
    /// What went wrong, without the file name.
    var cause: String { get }
}

extension KDError {
    public var file: String { "" }
}

extension InputError: KDError {
    public var errorCode: String { "input.invalid" }
    public var category: ErrorCategory { .invalidInput }
    public var file: String { path }
    public var cause: String { message }
}

extension OutputError: KDError {
    public var errorCode: String { "output.write" }
    public var category: ErrorCategory { .output }
    public var file: String { path }
    public var cause: String { message }
}

/// The common body of the module errors that are a code, an optional file and a cause.
public struct ErrorBody<Code: RawRepresentable & Sendable>: Sendable where Code.RawValue == String {
    public var code: Code
    public var file: String
    public var cause: String

    public init(_ code: Code, file: String, cause: String) {
        self.code = code
        self.file = file
        self.cause = cause
    }

    /// "FILE: cause", or the cause alone.
    public var text: String { file.isEmpty ? cause : "\(PathCoding.display(file)): \(cause)" }
}

/// A module error that is an `ErrorBody`: the code's raw value, the file and the cause come from
/// the body, so each module's type says only its codes and their categories.
public protocol BodiedError: KDError {
    associatedtype Code: RawRepresentable & Sendable where Code.RawValue == String
    var body: ErrorBody<Code> { get }
}

extension BodiedError {
    public var errorCode: String { body.code.rawValue }
    public var code: Code { body.code }
    public var file: String { body.file }
    public var cause: String { body.cause }
    public var description: String { body.text }
}
