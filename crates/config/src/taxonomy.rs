//! The built-in domain taxonomy: the 14 MMLU-Pro categories the built-in domain classifier
//! predicts (in its output order) and how MMLU's subjects map onto them. Config validation checks
//! domain rules against it; the domain signal and the training program use it.

/// The built-in categories (MMLU-Pro), in the classifier's output order.
pub const CATEGORIES: [&str; 14] = [
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "philosophy",
    "physics",
    "psychology",
    "other",
];

/// Maps one of MMLU's 57 subjects to its MMLU-Pro category.
pub fn category_of_mmlu_subject(subject: &str) -> Option<&'static str> {
    Some(match subject {
        "anatomy" | "college biology" | "high school biology" | "medical genetics" | "virology" => "biology",
        "business ethics" | "management" | "marketing" | "professional accounting" | "public relations" => "business",
        "college chemistry" | "high school chemistry" => "chemistry",
        "college computer science" | "computer security" | "high school computer science" | "machine learning" => {
            "computer science"
        }
        "econometrics" | "high school macroeconomics" | "high school microeconomics" => "economics",
        "electrical engineering" => "engineering",
        "clinical knowledge" | "college medicine" | "human aging" | "nutrition" | "professional medicine" => "health",
        "high school european history" | "high school us history" | "high school world history" | "prehistory" => {
            "history"
        }
        "international law" | "jurisprudence" | "professional law" => "law",
        "abstract algebra"
        | "college mathematics"
        | "elementary mathematics"
        | "high school mathematics"
        | "high school statistics" => "math",
        "formal logic" | "logical fallacies" | "moral disputes" | "moral scenarios" | "philosophy"
        | "world religions" => "philosophy",
        "astronomy" | "college physics" | "conceptual physics" | "high school physics" => "physics",
        "high school psychology" | "human sexuality" | "professional psychology" => "psychology",
        "global facts"
        | "miscellaneous"
        | "high school geography"
        | "high school government and politics"
        | "security studies"
        | "sociology"
        | "us foreign policy" => "other",
        _ => return None,
    })
}
