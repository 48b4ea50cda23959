//! `[eval]`: how the test split is scored.

use serde::{Deserialize, Serialize};

use super::{bad, Checked, Data, Source};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Eval {
    /// Video: score each test video by this many views of `data.frames_per_clip` frames,
    /// shifted evenly through its segments, averaging their class probabilities (video papers'
    /// multi-clip testing; validation keeps one). Default 1: the centred frames alone.
    pub clips: usize,
}

impl Default for Eval {
    fn default() -> Self {
        Eval { clips: 1 }
    }
}

impl Eval {
    /// The steps of one view of a test clip when the test split holds several (`clips` > 1:
    /// views of `data.frames_per_clip` frames); None when it holds one.
    pub fn test_view(&self, data: &Data) -> Option<usize> {
        (self.clips > 1).then_some(data.frames_per_clip).flatten()
    }

    pub(super) fn check(&self, data: &Data) -> Checked {
        if self.clips == 0 {
            return bad("eval.clips", "must be at least 1");
        }
        if self.clips > 1 {
            let video = matches!(
                data.source,
                Source::SyntheticVideo | Source::Tensors | Source::Frames | Source::Videos
            );
            if !video {
                return bad(
                    "eval.clips",
                    format!(
                        "views of a clip need video; source = \"{}\" gives sequences that are scored whole",
                        data.source.name()
                    ),
                );
            }
            if data.frames_per_clip.is_none() {
                return bad(
                    "eval.clips",
                    "each view is data.frames_per_clip frames: set frames_per_clip (without it a clip is scored whole, once)",
                );
            }
        }
        Ok(())
    }
}
