from django import forms

from evalsite.preferences.imports import FORMATS, MAX_BYTES


class PreferenceImportForm(forms.Form):
    """A votes export of another instance, or a pairwise CSV of judgements gathered elsewhere."""

    file = forms.FileField(help_text=f"A .{', .'.join(FORMATS)} file of at most {MAX_BYTES // 2**20} MiB.")
    name = forms.CharField(max_length=200, required=False, help_text="Default: the file's name.")
    criterion = forms.CharField(
        max_length=40, required=False, help_text="For rows that name none, e.g. aesthetics or prompt_following."
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_BYTES:
            raise forms.ValidationError(f"The file is larger than {MAX_BYTES // 2**20} MiB.")
        return upload
