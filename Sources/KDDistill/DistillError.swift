import KDIO

/// A distillation method's precondition that does not hold: a teacher and student that do not
/// fit together (classes, labels, input shape), a hint, guided or FSP layer that is missing or
/// cannot be matched, or a configuration the method does not accept. kdtool exits 1.
public struct DistillError: BodiedError {
    public enum Code: String, Sendable {
        /// Teacher and student (or peers) do not fit together.
        case incompatible = "distill.incompatible"
        /// A named layer is missing, or its shape cannot be matched.
        case layer = "distill.layer"
        /// The method's settings are not usable (verticals, heads, temperatures, …).
        case configuration = "distill.configuration"
        /// The data does not fit the method (exit 2).
        case data = "distill.data"
    }
    public var body: ErrorBody<Code>
    public init(_ cause: String, code: Code = .configuration, file: String = "") { body = ErrorBody(code, file: file, cause: cause) }
    public init(code: Code, _ cause: String) { body = ErrorBody(code, file: "", cause: cause) }
    public var category: ErrorCategory { body.code == .data ? .invalidInput : .precondition }
}
